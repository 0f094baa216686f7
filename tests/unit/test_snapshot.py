"""Snapshots without QEMU: keys, the store, and PCI config space across a restore."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cocolab.qemu import VMConfig
from cocolab.vm.snapshot import (
    PciFunction,
    SnapshotStore,
    config_port_writes,
    parse_pci_dump,
    pci_differences,
    snapshot_key,
)

# edu as the saved guest saw it (BAR0 at 0xfea00000, decoding on, IRQ line 11) and as a
# restore hands it back (QEMU migrates no state for edu: BARs 0, decoding off).
EDU_SAVED = bytes.fromhex(  # as PCI_DUMP printed them on debian:trixie, QEMU 7.2
    "3412e811030110001000ff00000000000000a0fe000000000000000000000000"
    "000000000000000000000000f41a00110000000040000000000000000b010000")
EDU_LOST = bytes.fromhex(
    "3412e811000010001000ff000000000000000000000000000000000000000000"
    "000000000000000000000000f41a001100000000400000000000000000010000")


class ConfigPorts:
    """PCI configuration mechanism #1 as QEMU's host bridge decodes it: the HMP `o` commands
    a restore sends, applied to each function's config space; the order of what they wrote."""

    def __init__(self, functions: dict[str, bytes]):
        self.space = {bdf: bytearray(config) for bdf, config in functions.items()}
        self.address = 0
        self.written: list[tuple[str, int]] = []

    def hmp(self, command: str) -> None:
        verb, size, port, value = command.replace("/", "").split()
        assert verb == "o" and size in "bhw"
        port_, value_ = int(port, 16), int(value, 16)
        if port_ == 0xCF8:
            assert size == "w"
            self.address = value_
            return
        assert self.address & 0x8000_0000 and 0xCFC <= port_ <= 0xCFF
        bus, dev, fn = self.address >> 16 & 0xFF, self.address >> 11 & 0x1F, self.address >> 8 & 7
        bdf = f"0000:{bus:02x}:{dev:02x}.{fn}"
        at = (self.address & 0xFC) + port_ - 0xCFC
        n = {"b": 1, "h": 2, "w": 4}[size]
        self.space[bdf][at:at + n] = value_.to_bytes(n, "little")
        self.written.append((bdf, at))


def test_a_driverless_function_is_written_back_through_the_config_port_command_last() -> None:
    saved = {"0000:00:02.0": PciFunction(False, EDU_SAVED)}
    ports = ConfigPorts({"0000:00:02.0": EDU_LOST})
    for command in config_port_writes(saved):
        ports.hmp(command)
    assert bytes(ports.space["0000:00:02.0"]) == EDU_SAVED
    assert ports.written[-1] == ("0000:00:02.0", 0x04)  # decoding on once the BARs are back
    assert [at for _, at in ports.written[:6]] == [0x10, 0x14, 0x18, 0x1C, 0x20, 0x24]


def test_functions_a_driver_held_or_in_another_domain_are_not_written() -> None:
    assert config_port_writes({"0000:00:02.0": PciFunction(True, EDU_SAVED),
                               "0001:00:02.0": PciFunction(False, EDU_SAVED)}) == []


def test_the_address_names_bus_device_and_function() -> None:
    ports = ConfigPorts({"0000:05:1f.7": EDU_LOST})
    for command in config_port_writes({"0000:05:1f.7": PciFunction(False, EDU_SAVED)}):
        ports.hmp(command)
    assert bytes(ports.space["0000:05:1f.7"]) == EDU_SAVED


def test_a_faithful_restore_differs_in_nothing() -> None:
    saved = {"0000:00:02.0": PciFunction(False, EDU_SAVED)}
    assert pci_differences(saved, dict(saved)) == []


@pytest.mark.parametrize(("before", "after", "why"), [
    (PciFunction(True, EDU_SAVED), PciFunction(True, EDU_LOST), "a driver holds it"),
    (PciFunction(False, EDU_SAVED), PciFunction(False, EDU_LOST), "not written back"),
    (PciFunction(False, EDU_SAVED), PciFunction(False, b"\x86\x80" + EDU_LOST[2:]),
     "gone or another device"),
])
def test_a_function_not_as_saved_is_unfaithful(before, after, why) -> None:
    """"not written back": what a guest under lockdown showed when the write-back was its own
    (config writes from userspace refused, EPERM): the restored guest must not be used."""
    assert pci_differences({"0000:00:02.0": before}, {"0000:00:02.0": after}) \
        == [f"0000:00:02.0 ({why})"]


def test_a_function_that_was_not_there_is_unfaithful() -> None:
    same = {"0000:00:01.0": PciFunction(False, EDU_SAVED)}
    assert pci_differences(same, {**same, "0000:00:03.0": PciFunction(False, EDU_SAVED)}) \
        == ["0000:00:03.0 (new)"]


def test_the_dump_parses_as_the_guest_prints_it() -> None:
    text = f"0000:00:02.0 free {EDU_SAVED.hex()}\n0000:00:01.0 bound {EDU_SAVED.hex()}\njunk\n"
    assert parse_pci_dump(text) == {"0000:00:02.0": PciFunction(False, EDU_SAVED),
                                    "0000:00:01.0": PciFunction(True, EDU_SAVED)}


def _config(tmp_path: Path) -> VMConfig:
    for name in ("qemu", "bzImage", "initrd"):
        (tmp_path / name).write_bytes(name.encode())
    return VMConfig(qemu=str(tmp_path / "qemu"), kernel=tmp_path / "bzImage",
                    initrd=tmp_path / "initrd")


def test_the_key_changes_with_everything_that_makes_the_guest(tmp_path: Path) -> None:
    config = _config(tmp_path)
    key = snapshot_key(config, "7.2.0")
    assert snapshot_key(config, "7.2.0") == key
    assert snapshot_key(config, "10.0.0") != key
    assert snapshot_key(dataclasses.replace(config, cmdline=("quiet",)), "7.2.0") != key
    assert snapshot_key(dataclasses.replace(config, accel="kvm"), "7.2.0") != key
    assert snapshot_key(dataclasses.replace(config, labels=(("lane", "x"),)), "7.2.0") == key
    (tmp_path / "initrd").write_bytes(b"another initrd, same path")
    assert snapshot_key(config, "7.2.0") != key


def test_the_store_keeps_the_most_recently_used_within_its_limit(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, limit_bytes=250)
    for i, key in enumerate(("a", "b", "c")):
        store.pending(key).write_bytes(b"x" * 100)
        store.commit(key, f"token-{key}", key, "")
        os.utime(tmp_path / f"{key}.mig", (1000 + i, 1000 + i))
    assert [p.stem for p in store.entries()] == ["b", "c"]  # 'a', the oldest, went first
    assert store.find("a") is None and store.find("b").token == "token-b"
    store.refuse("c", "edu lost its BARs", "vm c")
    assert store.find("c") is None and store.refused("c") == "edu lost its BARs"
