"""The PCI device-filter rules against fake sysfs trees (no kernel has them here)."""

from __future__ import annotations

from pathlib import Path

from cocolab.guest import authorization as auth
from cocolab.guest.usb import parse as parse_usb


def tree(tmp_path: Path, devices: dict[str, tuple[str, str, str | None, str | None]]) -> Path:
    """devices: BDF -> (vendor, device, authorized or None, driver or None)."""
    root = tmp_path / "root"
    for bdf, (vendor, device, authorized, driver) in devices.items():
        d = root / "sys/bus/pci/devices" / bdf
        d.mkdir(parents=True)
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(device + "\n")
        if authorized is not None:
            (d / "authorized").write_text(authorized + "\n")
        if driver is not None:
            target = root / "sys/bus/pci/drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            (d / "driver").symlink_to(target)
    return root


STOCK = {"0000:00:01.0": ("0x1af4", "0x1041", None, "virtio-pci"),
         "0000:00:02.0": ("0x8086", "0x100e", None, "e1000")}
FILTERED_OK = {"0000:00:01.0": ("0x1af4", "0x1041", "1", "virtio-pci"),
               "0000:00:02.0": ("0x8086", "0x100e", "0", None)}


def test_a_stock_kernel_has_no_authorization(tmp_path: Path) -> None:
    devices = auth.read_tree(tree(tmp_path, STOCK))
    assert not auth.has_authorization(devices)
    assert "use a kernel carrying the TDX guest device filter" in auth.NO_AUTHORIZATION


def test_a_filter_kernel_that_follows_the_rules(tmp_path: Path) -> None:
    devices = auth.read_tree(tree(tmp_path, FILTERED_OK))
    assert auth.has_authorization(devices)
    assert auth.violations(devices, auth.allow_list("console=ttyS0")) == []


def test_an_unauthorized_but_bound_device_is_a_violation(tmp_path: Path) -> None:
    bad = dict(FILTERED_OK)
    bad["0000:00:02.0"] = ("0x8086", "0x100e", "0", "e1000")
    devices = auth.read_tree(tree(tmp_path, bad))
    assert auth.violations(devices, auth.allow_list("")) == [
        "0000:00:02.0 (8086:100e): unauthorized but bound to e1000"]


def test_authorized_off_the_allow_list_is_a_violation(tmp_path: Path) -> None:
    bad = dict(FILTERED_OK)
    bad["0000:00:02.0"] = ("0x8086", "0x100e", "1", "e1000")
    devices = auth.read_tree(tree(tmp_path, bad))
    assert auth.violations(devices, auth.allow_list("")) == [
        "0000:00:02.0 (8086:100e): authorized=1, the allow list says 0"]


def test_the_cmdline_extends_the_allow_list(tmp_path: Path) -> None:
    allowed = dict(FILTERED_OK)
    allowed["0000:00:02.0"] = ("0x8086", "0x100e", "1", "e1000")
    devices = auth.read_tree(tree(tmp_path, allowed))
    cmdline = "console=ttyS0 authorize_allow_devs=pci:8086:100e,8086:10d3;acpi:ALL"
    assert auth.allow_list(cmdline) >= {(0x8086, 0x100E), (0x8086, 0x10D3)}
    assert auth.violations(devices, auth.allow_list(cmdline)) == []


def test_usb_listing_parses_devices_and_interfaces() -> None:
    text = ("1-1|QEMU USB Keyboard|0||usb\n1-2|QEMU USB Tablet|1|1|usb\n"
            "1-2:1.0||1||usbhid\nusb1|xHCI Host Controller|1|1|usb\n")
    entries = parse_usb(text)
    assert [e.name for e in entries] == ["1-1", "1-2", "1-2:1.0", "usb1"]
    assert entries[0].authorized == "0" and entries[0].configuration == ""
    assert entries[2].is_interface and entries[2].driver == "usbhid"
