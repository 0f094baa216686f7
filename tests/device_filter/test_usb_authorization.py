"""USB authorization: the mainline model the PCI device-filter proposal generalised.

Source: drivers/usb/core (usbcore.authorized_default, hcd->dev_policy; usb_deauthorize_device
/ usb_authorize_device; "Device is not authorized for usage" from usb_new_device's config
choice; "authorized to connect" on authorization); Documentation/ABI/testing/sysfs-bus-usb.
usbcore is a module in Debian kernels: the guest's /init turns `usbcore.authorized_default=0`
on the kernel command line into a modprobe.d option, as kmod's modprobe would apply it.
Every test runs on two boots: the default one (the counterpart) and authorized_default=0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from cocolab.assertions import eventually
from cocolab.guest import Guest

pytestmark = [pytest.mark.topology("usb-xhci"),
              pytest.mark.kconfig("USB", "USB_XHCI_HCD", "USB_HID")]

KEYBOARD, TABLET, STICK = "QEMU USB Keyboard", "QEMU USB Tablet", "QEMU USB HARDDRIVE"
HID = (KEYBOARD, TABLET)
policy = pytest.mark.parametrize("authorized_default", [
    pytest.param(None, id="default-boot"),
    pytest.param(0, id="authorized_default=0",
                 marks=pytest.mark.cmdline("usbcore.authorized_default=0")),
])


@pytest.fixture
def usb(vm: Guest, authorized_default: int | None) -> Iterator[Guest]:
    """xHCI and usbhid loaded, the three devices enumerated; their authorization and the
    root hubs' interface policy put back afterwards (the VM is shared)."""
    vm.modprobe("usbhid", "xhci_pci")
    vm.usb.wait_for([KEYBOARD, TABLET, STICK])
    yield vm
    boot_value = 0 if authorized_default == 0 else 1
    for entry in vm.usb.entries():
        if entry.name.startswith("usb"):
            vm.usb.set_hub_attr(entry.name, "interface_authorized_default", 1)
        elif not entry.is_interface and entry.authorized != str(boot_value):
            vm.usb.authorize(entry.name, boot_value)

    def restored() -> None:
        for entry in vm.usb.entries():
            if not entry.is_interface and not entry.name.startswith("usb"):
                assert entry.authorized == str(boot_value), f"{entry.name} not restored"
    eventually(restored)


@policy
def test_new_devices_follow_authorized_default(usb: Guest, authorized_default: int | None
                                               ) -> None:
    log = usb.dmesg.read()
    for product in (KEYBOARD, TABLET, STICK):
        dev = usb.usb.device(product)
        if authorized_default == 0:
            assert (dev.authorized, dev.configuration) == ("0", ""), dev
            assert usb.usb.interfaces(dev) == []
            assert log.grep(rf"usb {dev.name}: Device is not authorized for usage")
        else:
            assert (dev.authorized, dev.configuration) == ("1", "1"), dev
            assert not log.grep(rf"usb {dev.name}: Device is not authorized")
    for product in HID:
        drivers = {i.driver for i in usb.usb.interfaces(usb.usb.device(product))}
        assert drivers == (set() if authorized_default == 0 else {"usbhid"})


@policy
def test_root_hubs_show_the_policy(usb: Guest, authorized_default: int | None) -> None:
    hubs = [e.name for e in usb.usb.entries() if e.name.startswith("usb")]
    assert hubs
    want = "0" if authorized_default == 0 else "1"  # -1 (default): wired hubs authorize all
    for hub in hubs:
        assert usb.usb.hub_attr(hub, "authorized_default") == want


@policy
def test_writing_authorized_configures_and_binds_then_unbinds(usb: Guest,
                                                              authorized_default: int | None
                                                              ) -> None:
    kbd = usb.usb.device(KEYBOARD)
    usb.dmesg.mark()
    assert usb.usb.authorize(kbd.name, 1).ok

    def configured_and_bound() -> None:
        dev = usb.usb.device(KEYBOARD)
        assert (dev.authorized, dev.configuration) == ("1", "1")
        assert {i.driver for i in usb.usb.interfaces(dev)} == {"usbhid"}
    eventually(configured_and_bound)
    if authorized_default == 0:
        assert usb.dmesg.since_mark().grep(rf"usb {kbd.name}: authorized to connect")
    assert usb.usb.authorize(kbd.name, 0).ok

    def deconfigured() -> None:
        dev = usb.usb.device(KEYBOARD)
        assert (dev.authorized, dev.configuration) == ("0", "")
        assert usb.usb.interfaces(dev) == []
    eventually(deconfigured)


@policy
def test_interface_authorized_default_holds_back_interface_drivers(
        usb: Guest, authorized_default: int | None) -> None:
    kbd = usb.usb.device(KEYBOARD)
    hub = "usb" + kbd.name.split("-")[0]
    assert usb.usb.hub_attr(hub, "interface_authorized_default") == "1"
    assert usb.usb.set_hub_attr(hub, "interface_authorized_default", 0).ok
    # re-enumerate the keyboard's configuration under the new interface policy
    assert usb.usb.authorize(kbd.name, 0).ok
    assert usb.usb.authorize(kbd.name, 1).ok

    def interface(authorized: str, driver: str) -> Callable[[], None]:
        def check() -> None:
            ifaces = usb.usb.interfaces(usb.usb.device(KEYBOARD))
            assert [(i.authorized, i.driver) for i in ifaces] == [(authorized, driver)], ifaces
        return check
    # Writes to `authorized` configure the device and probe its interfaces synchronously
    # (usb_authorize_device -> usb_set_configuration -> device_add): once the interface
    # exists, its driver state is the kernel's answer, not a moment in a race.
    eventually(interface("0", ""))
    # Authorizing the interface does not probe it (message.c usb_authorize_interface only
    # sets the flag); Documentation/usb/authorization.rst: trigger the probe by writing the
    # interface to /sys/bus/usb/drivers_probe. Then usbhid binds: the counterpart.
    (iface,) = usb.usb.interfaces(usb.usb.device(KEYBOARD))
    assert usb.usb.authorize(iface.name, 1).ok
    eventually(interface("1", ""))
    assert usb.write_sysfs("/sys/bus/usb/drivers_probe", iface.name).ok
    eventually(interface("1", "usbhid"))
