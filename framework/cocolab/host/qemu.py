"""Find the QEMU binary and ask it, over QMP, what it is and what it has."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from qemu.qmp.legacy import QEMUMonitorProtocol

from cocolab.errors import HostError
from cocolab.host.process import kill_qemu, start_qemu
from cocolab.paths import cache_dir

LOG = logging.getLogger(__name__)
DEFAULT_QEMU = "qemu-system-x86_64"
PROBE_VERSION = 1


@dataclass(frozen=True)
class QemuInfo:
    binary: str
    version: str
    machines: frozenset[str]
    types: frozenset[str]
    """Every non-abstract QOM type: devices, objects (tdx-guest, sev-snp-guest), backends."""

    def has_device(self, name: str) -> bool:
        return name in self.types

    def has_machine(self, name: str) -> bool:
        return name in self.machines


def find_qemu(requested: str | None) -> str:
    """`requested` (--qemu), else qemu-system-x86_64 on PATH; an absolute path."""
    name = requested or DEFAULT_QEMU
    path = shutil.which(name)
    if path is None:
        how = (f"--qemu {requested} does not exist or is not executable" if requested else
               f"{DEFAULT_QEMU} is not on PATH: apt-get install --no-install-recommends "
               "qemu-system-x86, or pass --qemu /path/to/qemu-system-x86_64")
        raise HostError(how)
    return str(Path(path).resolve())


def _cache_key(binary: str) -> str:
    st = Path(binary).stat()
    return hashlib.sha256(
        f"{PROBE_VERSION}:{binary}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def probe_qemu(binary: str) -> QemuInfo:
    """Version, machine types and QOM types of `binary`, via QMP; cached per binary."""
    cache = cache_dir("host") / f"qemu-{_cache_key(binary)}.json"
    with FileLock(str(cache) + ".lock"):
        if cache.exists():
            data = json.loads(cache.read_text())
        else:
            data = _query(binary)
            cache.write_text(json.dumps(data))
    return QemuInfo(binary, data["version"], frozenset(data["machines"]),
                    frozenset(data["types"]))


def _query(binary: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cocolab-probe-") as tmp:
        sock = Path(tmp) / "qmp.sock"
        qmp = QEMUMonitorProtocol(str(sock), server=True)
        log = Path(tmp) / "qemu.log"
        proc = start_qemu([binary, "-machine", "none", "-nodefaults", "-no-user-config",
                           "-display", "none", "-chardev", f"socket,id=qmp0,path={sock}",
                           "-mon", "chardev=qmp0,mode=control"], log)
        try:
            qmp.accept(timeout=15)
            version = qmp.cmd("query-version")
            machines = qmp.cmd("query-machines")
            types = qmp.cmd("qom-list-types", abstract=False)
        except Exception as exc:
            raise HostError(f"could not query {binary} over QMP: {exc}; it said: "
                            f"{log.read_text(errors='replace').strip()[-500:]}") from exc
        finally:
            qmp.close()
            kill_qemu(proc)
    assert isinstance(version, dict) and isinstance(machines, list) and isinstance(types, list)
    q = version["qemu"]
    names = {m["name"] for m in machines} | {m["alias"] for m in machines if "alias" in m}
    return {
        "version": f"{q['major']}.{q['minor']}.{q['micro']}",
        "machines": sorted(names),
        "types": sorted(t["name"] for t in types),
    }
