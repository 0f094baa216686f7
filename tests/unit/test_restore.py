"""PCI.restore against a fake guest whose sysfs binds devices, or refuses to (no QEMU)."""

from __future__ import annotations

import json
import shlex

import pytest

from cocolab.errors import RestoreError
from cocolab.guest.pci import PCI
from cocolab.vm.ssh import CommandResult


class FakeGuest:
    """Just enough of a VM for guest/pci.py: `readlink .../driver` and cocolab-probe writes
    to bind, unbind and driver_override. Devices in `stuck` refuse to bind (EBUSY)."""

    def __init__(self, drivers: dict[str, str | None], stuck: set[str] = frozenset()):
        self.drivers = dict(drivers)
        self.stuck = stuck
        self.retired: str | None = None

    def retire(self, why: str) -> None:
        self.retired = why

    def run(self, command: str, timeout: float = 60.0, check: bool = False) -> CommandResult:
        words = shlex.split(command)
        if words[0] == "readlink":
            bdf = words[1].split("/")[-2]
            driver = self.drivers.get(bdf)
            return CommandResult(command, 0 if driver else 1,
                                 f"../../bus/pci/drivers/{driver}\n" if driver else "", "", 0.0)
        assert words[:2] == ["/bin/cocolab-probe", "write"], command
        path, value = words[2], bytes.fromhex(words[4]).decode().strip()
        ok, err = True, None
        if path.endswith("/unbind"):
            self.drivers[value] = None
        elif path.endswith("/bind"):
            if value in self.stuck:
                ok, err = False, 16
            else:
                self.drivers[value] = path.split("/")[-2]
        report = {"op": "write", "path": path, "ok": ok, **({"errno": err} if err else {})}
        return CommandResult(command, 0, json.dumps(report) + "\n", "", 0.0)


def test_restore_puts_every_device_back() -> None:
    guest = FakeGuest({"0000:01:01.0": "vfio-pci", "0000:01:02.0": None})
    PCI(guest).restore({"0000:01:01.0": "e1000", "0000:01:02.0": "e1000"})  # type: ignore[arg-type]
    assert guest.drivers == {"0000:01:01.0": "e1000", "0000:01:02.0": "e1000"}
    assert guest.retired is None


def test_a_failed_restore_retires_the_vm_and_says_which_step() -> None:
    guest = FakeGuest({"0000:01:01.0": "vfio-pci"}, stuck={"0000:01:01.0"})
    with pytest.raises(RestoreError) as info:
        PCI(guest).restore({"0000:01:01.0": "e1000"})  # type: ignore[arg-type]
    assert str(info.value) == ("could not put 0000:01:01.0 back on e1000 (now None): bind: "
                               "write /sys/bus/pci/drivers/e1000/bind: EBUSY")
    assert guest.retired == str(info.value)
