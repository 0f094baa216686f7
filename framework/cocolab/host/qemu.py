"""Find the QEMU binary and ask it, over QMP, what it is and what it has."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from cocolab.deadline import Deadline
from cocolab.errors import HostError, MonitorError, said
from cocolab.host.process import accept_while_running, kill_qemu, qemu_said, qmp_args, start_qemu
from cocolab.monitor import Monitor
from cocolab.paths import cache_dir, write_atomic

LOG = logging.getLogger(__name__)
DEFAULT_QEMU = "qemu-system-x86_64"
PROBE_VERSION = 2
PROPERTIES_OF = ("nvme",)
"""Device models whose properties the probe lists (nvme: spdm_port, QEMU 9.1+)."""


@dataclass(frozen=True)
class QemuInfo:
    binary: str
    version: str
    machines: frozenset[str]
    types: frozenset[str]
    """Every non-abstract QOM type: devices, objects (tdx-guest, sev-snp-guest), backends."""
    properties: dict[str, frozenset[str]] = field(default_factory=dict)
    """The properties of each model in PROPERTIES_OF that this QEMU has."""

    def has_device(self, name: str) -> bool:
        return name in self.types

    def has_property(self, device: str, prop: str) -> bool:
        return prop in self.properties.get(device, frozenset())

    def has_machine(self, name: str) -> bool:
        return name in self.machines


def find_qemu(requested: str | None, source: str = "--qemu") -> str:
    """`requested` (from `source`: --qemu, COCOLAB_QEMU or a lane's key), else
    qemu-system-x86_64 on PATH; an absolute path to an executable ELF file."""
    name = requested or DEFAULT_QEMU
    path = shutil.which(name)
    given = said(source, requested) if requested else name
    if path is None:
        if requested and Path(requested).is_dir():
            raise HostError(f"{given}: a directory; point it at the qemu-system-x86_64 binary")
        how = (f"{given}: does not exist or is not executable" if requested else
               f"{DEFAULT_QEMU} is not on PATH: apt-get install --no-install-recommends "
               "qemu-system-x86, or pass --qemu /path/to/qemu-system-x86_64")
        raise HostError(how)
    resolved = Path(path).resolve()
    with resolved.open("rb") as f:
        magic = f.read(4)
    if magic != b"\x7fELF" and not magic.startswith(b"#!"):
        raise HostError(f"{given}: {resolved} is neither a program nor a script (no ELF "
                        "header); point it at qemu-system-x86_64")
    return str(resolved)


def _cache_key(binary: str) -> str:
    st = Path(binary).stat()
    return hashlib.sha256(
        f"{PROBE_VERSION}:{binary}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def probe_qemu(binary: str, refresh: bool = False) -> QemuInfo:
    """Version, machine types and QOM types of `binary`, via QMP; cached per binary."""
    cache = cache_dir("host") / f"qemu-{_cache_key(binary)}.json"
    with FileLock(str(cache) + ".lock"):
        data = None if refresh else _load(cache)
        if data is None:
            data = _query(binary)
            write_atomic(cache, json.dumps(data))
    return QemuInfo(binary, data["version"], frozenset(data["machines"]),
                    frozenset(data["types"]),
                    {k: frozenset(v) for k, v in data["properties"].items()})


def _load(cache: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    keys = {"version", "machines", "types", "properties"}
    return data if isinstance(data, dict) and keys <= data.keys() else None


QUERY_TIMEOUT_S = 15.0


def _query(binary: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cocolab-probe-", dir="/tmp") as tmp:
        path, log = Path(tmp) / "qmp.sock", Path(tmp) / "qemu.log"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        proc = start_qemu([binary, "-machine", "none", "-nodefaults", "-no-user-config",
                           "-display", "none", *qmp_args(path)], log)
        monitor = None
        try:
            conn = accept_while_running(listener, proc, Deadline(QUERY_TIMEOUT_S))
            if conn is None:
                raise MonitorError("it never connected to its QMP socket" if proc.poll() is None
                                   else f"it exited with status {proc.returncode}")
            monitor = Monitor(conn, "probe")
            monitor.start(QUERY_TIMEOUT_S)
            version = monitor.cmd("query-version")
            machines = monitor.cmd("query-machines")
            types = monitor.cmd("qom-list-types", {"abstract": False})
            present = {t["name"] for t in types}
            properties = {name: [p["name"] for p in monitor.cmd(
                "device-list-properties", {"typename": name})]
                for name in PROPERTIES_OF if name in present}
        except (MonitorError, OSError) as exc:
            said = qemu_said(log.read_text(errors="replace"))
            raise HostError(f"{binary} is not a working QEMU: {exc}"
                            + (f"; it said: {said}" if said else "")) from None
        finally:
            if monitor is not None:
                monitor.close()
            kill_qemu(proc)
            listener.close()
    q = version["qemu"]
    names = {m["name"] for m in machines} | {m["alias"] for m in machines if "alias" in m}
    return {
        "version": f"{q['major']}.{q['minor']}.{q['micro']}",
        "machines": sorted(names),
        "types": sorted(t["name"] for t in types),
        "properties": {k: sorted(v) for k, v in properties.items()},
    }
