#!/usr/bin/env python3
"""Boot benchmark: cold boot -> READY and cold boot -> first SSH command, median of N runs.

Every run starts a new QEMU (kernel and guest image come from the warm cache: that is the cost
a developer pays per VM). When virtme-ng's `vng` is on PATH it boots the same kernel N times
running `uname -r`, for comparison, measured end to end the same way.

    python bench/boot.py --runs 5 --json boot.json [--kernel debian:sid] [--accel tcg]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cocolab.rig import Rig, RigOptions
from cocolab.vm import VM


def cocolab_runs(rig: Rig, runs: int) -> tuple[list[float], list[float]]:
    ready, ssh = [], []
    config = rig.vm_config()
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="cocolab-bench-") as tmp:
            with VM(config, Path(tmp), rig.kernel, rig.image.keys, name=f"bench{i}") as vm:
                assert vm.ready_seconds is not None and vm.boot_seconds is not None
                ready.append(round(vm.ready_seconds, 3))
                ssh.append(round(vm.boot_seconds, 3))
    return ready, ssh


def busybox_for_vng() -> str | None:
    """vng --busybox wants a static busybox; the guest image's .deb cache has one."""
    found = shutil.which("busybox")
    if found:
        return found
    from cocolab.paths import cache_dir
    debs = sorted(cache_dir("guest", "debs").glob("busybox-static_*.deb"))
    if not debs:
        return None
    out = cache_dir("bench")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True)
    return str(out / "bin/busybox")


def vng_runs(rig: Rig, runs: int) -> tuple[list[float] | None, str]:
    vng = shutil.which("vng")
    if vng is None:
        return None, "vng not on PATH (pip install virtme-ng to compare)"
    if shutil.which("udevadm") is None:
        return None, "vng needs the host's udev (apt-get install udev) and there is none"
    argv = [vng, "--run", str(rig.kernel.image), "--exec", "uname -r"]
    if rig.accel.accel == "tcg":
        argv.append("--disable-kvm")
    busybox = busybox_for_vng()
    if busybox:
        argv += ["--busybox", busybox]
    times = []
    for _ in range(runs):
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        if proc.returncode != 0 or rig.kernel.release not in proc.stdout:
            return None, (f"vng failed ({proc.returncode}): "
                          f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        times.append(round(elapsed, 3))
    return times, " ".join(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--kernel")
    parser.add_argument("--accel")
    parser.add_argument("--no-vng", action="store_true", help="skip the virtme-ng comparison")
    args = parser.parse_args()

    rig = Rig(RigOptions(kernel=args.kernel, accel=args.accel))
    rig.image  # fetch and build before timing anything  # noqa: B018
    ready, ssh = cocolab_runs(rig, args.runs)
    vng, vng_note = (None, "skipped (--no-vng)") if args.no_vng else vng_runs(rig, args.runs)
    result = {
        "kernel": rig.kernel.release,
        "kernel_spec": str(rig.kernel_spec),
        "accel": rig.accel.accel,
        "accel_reason": rig.accel.reason,
        "qemu": f"{rig.qemu_info.binary} {rig.qemu_info.version}",
        "runs": args.runs,
        "boot_to_ready_s": ready,
        "boot_to_ready_median_s": statistics.median(ready),
        "cold_boot_to_ssh_s": ssh,
        "cold_boot_to_ssh_median_s": statistics.median(ssh),
        "virtme_ng_s": vng,
        "virtme_ng_median_s": statistics.median(vng) if vng else None,
        "virtme_ng_command": vng_note,
    }
    width = 34
    print(f"{'kernel':<{width}} {result['kernel']} ({result['kernel_spec']}), {rig.accel.accel}")
    print(f"{'cocolab boot -> READY (median)':<{width}} {result['boot_to_ready_median_s']:.2f} s"
          f"   runs: {ready}")
    print(f"{'cocolab boot -> first SSH command':<{width}} "
          f"{result['cold_boot_to_ssh_median_s']:.2f} s   runs: {ssh}")
    if vng:
        print(f"{'virtme-ng boot -> uname -r done':<{width}} {result['virtme_ng_median_s']:.2f} s"
              f"   runs: {vng}")
    else:
        print(f"{'virtme-ng':<{width}} n/a: {vng_note}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
