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
    parse_pci_dump,
    pci_repairs,
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


def test_a_faithful_restore_needs_nothing() -> None:
    saved = {"0000:00:02.0": PciFunction(False, EDU_SAVED)}
    assert pci_repairs(saved, dict(saved)) == ("", [], [])


def test_a_driverless_function_that_lost_its_config_is_written_back_bars_first() -> None:
    script, rewritten, unfaithful = pci_repairs(
        {"0000:00:02.0": PciFunction(False, EDU_SAVED)},
        {"0000:00:02.0": PciFunction(False, EDU_LOST)})
    assert (rewritten, unfaithful) == (["0000:00:02.0"], [])
    lines = script.splitlines()
    assert [line.split("seek=")[1].split()[0] for line in lines] == ["12", "16", "60", "4"]
    assert lines[1].startswith("printf '\\000\\000\\240\\376") and "count=24" in lines[1]


@pytest.mark.parametrize(("before", "after", "why"), [
    (PciFunction(True, EDU_SAVED), PciFunction(True, EDU_LOST), "a driver holds it"),
    (PciFunction(False, EDU_SAVED), PciFunction(False, b"\x86\x80" + EDU_LOST[2:]),
     "gone or another device"),
])
def test_what_cannot_be_written_back_is_unfaithful(before, after, why) -> None:
    repairs = pci_repairs({"0000:00:02.0": before}, {"0000:00:02.0": after})
    assert (repairs.script, repairs.unfaithful) == ("", [f"0000:00:02.0 ({why})"])


def test_a_function_that_was_not_there_is_unfaithful() -> None:
    same = {"0000:00:01.0": PciFunction(False, EDU_SAVED)}
    repairs = pci_repairs(same, {**same, "0000:00:03.0": PciFunction(False, EDU_SAVED)})
    assert repairs.unfaithful == ["0000:00:03.0 (new)"]


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
