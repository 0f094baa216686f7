"""Booted guests kept as QEMU migration streams, so a VM costs a restore instead of a boot.

A snapshot is taken once per VM identity, the moment a cold boot's /init says READY (no SSH
session yet, so none is frozen into it), and restored with `-incoming defer` +
`migrate-incoming`. Its key is everything that makes the guest what it is: the content hashes
of the kernel, the initrd and the QEMU binary, QEMU's version, the full VMConfig, the
accelerator (and the host CPU under KVM, whose `-cpu host` is the host's). A restore into
anything else is impossible by construction: another config is another key.

Snapshots live in the cache across runs (`<cache>/snapshots/KEY.mig` and `KEY.json`), used
least-recently first out once they exceed `limit_bytes`. One file lock per key: two xdist
workers that want the same VM boot it once, and the second restores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from cocolab.errors import HostError
from cocolab.paths import cache_dir, check_private, write_atomic
from cocolab.qemu import VMConfig

LOG = logging.getLogger(__name__)

FORMAT = 3
"""Bump when what a snapshot holds, or how it is taken, changes (3: written 0600)."""
DEFAULT_LIMIT_BYTES = 4 << 30
"""About thirty 1 GiB guests (a stream is ~130 MiB: QEMU sends zero pages as flags)."""


@dataclass(frozen=True)
class Snapshot:
    key: str
    state: Path
    """The migration stream."""
    token: str
    """The readiness token of the boot it was taken from: the restore's argv must carry the
    same kernel command line, as the guest's memory does."""
    pci_dump: str = ""
    """PCI_DUMP as the saved guest answered it (see config_port_writes)."""
    console: Path | None = None
    """The console log of the boot it was taken of, up to the moment it was saved: a restored
    VM's console.log begins with it, so its failure bundle shows a boot."""


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _host_cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields = [line for line in text.splitlines()
              if line.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()


def snapshot_key(config: VMConfig, qemu_version: str) -> str:
    identity = {
        "format": FORMAT,
        "config": {k: v for k, v in asdict(config).items() if k != "labels"},
        "kernel": file_digest(config.kernel),
        "initrd": file_digest(config.initrd),
        "qemu": file_digest(Path(config.qemu)),
        "qemu_version": qemu_version,
        "host_cpu": _host_cpu() if config.accel == "kvm" else "",
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class SnapshotStore:
    def __init__(self, root: Path | None = None, limit_bytes: int = DEFAULT_LIMIT_BYTES):
        self.root = root or cache_dir("snapshots")
        self.limit_bytes = limit_bytes

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / f"{key}.lock"))

    def pending(self, key: str) -> Path:
        """Where a snapshot being taken is written; commit() makes it the snapshot."""
        return self.root / f".{key}.{os.getpid()}.mig.tmp"

    def find(self, key: str) -> Snapshot | None:
        """The snapshot of `key`, or None. One that others may read (it holds the guest's
        memory, and so its SSH host key) is HostError, after it is deleted."""
        state, meta = self.root / f"{key}.mig", self.root / f"{key}.json"
        try:
            info = json.loads(meta.read_text())
            os.utime(state)  # used now: the last to be pruned
        except (OSError, ValueError):
            return None
        try:
            check_private(state, "a snapshot (the guest's memory, its SSH host key in it)")
        except HostError as exc:
            self.discard(key)
            raise HostError(f"{exc.args[0].split('; remove it')[0]}; deleted, the VM boots "
                            "cold") from None
        console = self.root / f"{key}.console"
        return Snapshot(key, state, info["token"], info.get("pci", ""),
                        console if console.exists() else None)

    def refused(self, key: str) -> str | None:
        """Why this VM is never snapshotted (QEMU refused to save it, or a restore of it was
        unfaithful), as recorded by refuse(); None if it may be."""
        try:
            return str(json.loads((self.root / f"{key}.refused").read_text())["why"])
        except (OSError, ValueError, KeyError):
            return None

    def refuse(self, key: str, why: str, describe: str) -> None:
        self.discard(key)
        write_atomic(self.root / f"{key}.refused", json.dumps({"why": why, "vm": describe}))

    def commit(self, key: str, token: str, describe: str, pci_dump: str,
               console: bytes = b"") -> Snapshot:
        state = self.root / f"{key}.mig"
        self.pending(key).chmod(0o600)  # SavingBoot writes it so; whoever did, it is private
        os.replace(self.pending(key), state)
        console_path = self.root / f"{key}.console"
        console_path.write_bytes(console)
        write_atomic(self.root / f"{key}.json", json.dumps(
            {"token": token, "vm": describe, "taken": time.time(),
             "bytes": state.stat().st_size, "pci": pci_dump}, indent=1))
        self.prune(keep=key)
        return Snapshot(key, state, token, pci_dump, console_path)

    def discard(self, key: str) -> None:
        for name in (f"{key}.mig", f"{key}.json", f"{key}.console"):
            (self.root / name).unlink(missing_ok=True)
        self.pending(key).unlink(missing_ok=True)

    def entries(self) -> list[Path]:
        return sorted(self.root.glob("*.mig"), key=lambda p: p.stat().st_mtime)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.entries())

    def prune(self, keep: str | None = None) -> list[str]:
        """Drop the least recently used snapshots until the store fits its limit."""
        dropped = []
        for stale in self.root.glob(".*.mig.tmp"):  # a run killed while taking one
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        entries = self.entries()
        total = sum(p.stat().st_size for p in entries)
        for path in entries:
            if total <= self.limit_bytes:
                break
            key = path.stem
            if key == keep:
                continue
            lock = self.lock(key)
            try:
                lock.acquire(timeout=0)  # in use (being restored or taken): keep it
            except Timeout:
                continue
            try:
                total -= path.stat().st_size
                self.discard(key)
            finally:
                lock.release()
            dropped.append(key)
            LOG.info("snapshot %s pruned (store over %d MiB)", key, self.limit_bytes >> 20)
        return dropped


# --- PCI config space across a restore ------------------------------------------------------
#
# QEMU migrates a device's config space with the rest of its state, but only for models that
# have migration state at all: edu (the BAR target of tests/devmem) has none, so a restored
# edu answers with the config space it had before firmware and kernel programmed it (BARs 0,
# decoding off) while the kernel still believes its BARs assigned. The config space of every
# function is therefore read in the saved guest, and what firmware and the kernel program
# (command, cache line, latency, BARs, interrupt line) is put back into every function no
# driver held, before the restored guest runs: a driverless device has no other state the guest
# put there. QEMU writes it, through the machine's configuration port (HMP `o` to 0xCF8/0xCFC,
# PCI configuration mechanism #1, which q35 and pc decode), so the guest's lockdown, which
# refuses config writes from its userspace, has no say. The guest's own dump after the restore
# must then match the saved one: any function that differs makes the snapshot unfaithful.

PCI_DUMP = "cocolab-pci-dump"
"""One line per PCI function: BDF, bound|free, the first 64 bytes of its config space
(guests/helpers/cocolab-pci-dump.c)."""

PROGRAMMED = ((0x10, 24), (0x0C, 2), (0x3C, 1), (0x04, 2))
"""(offset, length) of the registers firmware and the kernel write, in the order they are
written back: the six BARs, cache line and latency, the interrupt line, and last the command
register, which turns decoding on once the BARs are in place."""

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
_SIZES = {1: "b", 2: "h", 4: "w"}
"""HMP's size letters for port I/O (as for `x`): byte, halfword, word."""


@dataclass(frozen=True)
class PciFunction:
    bound: bool
    config: bytes


def parse_pci_dump(text: str) -> dict[str, PciFunction]:
    functions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and len(parts[2]) == 128:
            functions[parts[0]] = PciFunction(parts[1] == "bound", bytes.fromhex(parts[2]))
    return functions


def _programmed(config: bytes) -> bytes:
    return b"".join(config[off:off + n] for off, n in PROGRAMMED)


def config_port_writes(saved: dict[str, PciFunction]) -> list[str]:
    """HMP commands writing the programmed registers of every driverless function in `saved`
    back as they were: the address of each dword in CONFIG_ADDRESS, then its bytes to
    CONFIG_DATA (plus the offset within the dword). A function that kept its state is
    written the values it has. Only domain 0 is reachable this way: another is left as it is
    (and the dump after the restore says whether it kept its state)."""
    out = []
    for bdf, function in sorted(saved.items()):
        domain, bus, devfn = bdf.split(":")
        if function.bound or int(domain, 16) != 0:
            continue
        dev, fn = devfn.split(".")
        address = 0x8000_0000 | int(bus, 16) << 16 | int(dev, 16) << 11 | int(fn, 16) << 8
        for off, n in PROGRAMMED:
            for at in range(off, off + n, 4):
                size = min(4, off + n - at)
                value = int.from_bytes(function.config[at:at + size], "little")
                out += [f"o /w {CONFIG_ADDRESS:#x} {address | at & ~3:#x}",
                        f"o /{_SIZES[size]} {CONFIG_DATA + (at & 3):#x} {value:#x}"]
    return out


def pci_differences(saved: dict[str, PciFunction], now: dict[str, PciFunction]) -> list[str]:
    """The functions of the restored guest (`now`) that are not as `saved`, each with why."""
    differ = []
    for bdf, before in sorted(saved.items()):
        after = now.get(bdf)
        if after is None or after.config[:4] != before.config[:4]:
            differ.append(f"{bdf} (gone or another device)")
        elif _programmed(after.config) != _programmed(before.config):
            differ.append(f"{bdf} ({'a driver holds it' if before.bound else 'not written back'})")
    return differ + [f"{bdf} (new)" for bdf in sorted(set(now) - set(saved))]
