"""The host's TSC frequency: under TCG a guest's RDTSC reads the host's TSC, so it is the
guest's TSC frequency too.

microvm has no HPET and no ACPI PM timer; its guest calibrates the TSC against the PIT alone,
and on a busy host that fails ("tsc: Fast TSC calibration failed", "Unable to calibrate
against PIT", "Marking TSC unstable"): the boot never reaches /init (0 of 4 boots under three
CPU hogs, measured). Told the frequency (tsc_early_khz=) and that the TSC is to be trusted
(tsc=reliable: the clocksource watchdog, itself timed by a starved guest, marked it unstable
otherwise), 3 of 3 reached READY under the same load. The rig adds both for microvm under TCG.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

from cocolab.errors import HostError
from cocolab.host.accel import boot_id
from cocolab.paths import cache_dir, write_atomic

SOURCE = Path(__file__).with_name("tsc_khz.c")


def host_tsc_khz() -> int:
    """This host's TSC frequency in kHz, rounded to whole MHz (a VM's command line, and so
    its snapshot's key, is then the same on every run); measured once per host boot."""
    cached = cache_dir("host") / f"tsc-khz-{boot_id()}"
    with FileLock(str(cached) + ".lock"):
        if not cached.exists():
            khz = int(subprocess.run([str(_program())], capture_output=True, text=True,
                                     check=True, timeout=30).stdout)
            write_atomic(cached, f"{round(khz / 1000) * 1000}\n")
    return int(cached.read_text())


def _program() -> Path:
    """host/tsc_khz.c, compiled once per source into the cache."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = cache_dir("helpers") / f"tsc-khz-{digest}"
    if not out.exists():
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise HostError("no C compiler to measure the host's TSC for a microvm guest: "
                            "apt-get install gcc")
        tmp = out.with_suffix(".tmp")
        built = subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(tmp), str(SOURCE)],
                               capture_output=True, text=True, check=False)
        if built.returncode != 0:
            raise HostError(f"compiling {SOURCE.name} failed:\n{built.stderr.strip()}")
        tmp.rename(out)
    return out
