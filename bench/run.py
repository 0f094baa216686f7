#!/usr/bin/env python3
"""The speed benchmark: every figure side by side, in one run, on one kernel.

    python bench/run.py [--rounds 5] [--kernel debian:trixie] [--json bench.json] [--no-suites]

Per round, in this order (interleaved, so that the noise of a shared machine falls on all
alike): the bare-kernel floor (the same kernel, machine, RAM and CPUs, with the accelerator
proof's one-program initramfs that says so on the console and powers off), a cocolab cold boot
to its first SSH command (with the guest time of each /init step, from its stamps), and a
restore of that VM's snapshot to its first SSH command. Then the median round trip of 200
`true` commands on one VM, and `pytest tests/devmem/` five ways: `--no-snapshots` serial
without and with boot-ahead, with warm snapshots (after one untimed run that makes them)
without and with boot-ahead, and `--no-snapshots -n 2`. virtme-ng's `vng --exec` on the
same kernel, when `vng` is on PATH.
Ratios are what to read: this machine is shared, and an absolute second means little.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cocolab.guest import Guest
from cocolab.guest_image import build_proof_initrd
from cocolab.pytest_plugin.pool import default_boot_ahead
from cocolab.rig import Rig, RigOptions
from cocolab.vm.boot import Boot, Restore, SavingBoot
from cocolab.vm.proof import proof_boot
from cocolab.vm.snapshot import Snapshot, SnapshotStore

REPO = Path(__file__).resolve().parents[1]


def floor(rig: Rig) -> float:
    config = rig.vm_config()
    boot = proof_boot(config.qemu, config.kernel, build_proof_initrd(), config.accel,
                      like=config)
    if not boot.reached:
        raise SystemExit(f"the floor boot failed: {boot}")
    return boot.seconds


def boot(rig: Rig, strategy: Boot | None = None) -> Guest:
    tmp = Path(tempfile.mkdtemp(prefix="cocolab-bench-"))
    vm = rig.guest(rig.vm_config(), tmp, "bench")
    vm.launch(rig.options.boot_timeout, strategy)
    return vm


def stop(vm: Guest) -> None:
    vm.shutdown()
    shutil.rmtree(vm.workdir, ignore_errors=True)


def snapshot(rig: Rig, store: SnapshotStore) -> Snapshot:
    saving = SavingBoot(store.pending("bench"))
    vm = boot(rig, saving)
    try:
        if saving.refused:
            raise SystemExit(f"the default VM cannot be snapshotted: {saving.refused}")
        return store.commit("bench", vm.token, "bench", saving.pci_dump)
    finally:
        stop(vm)


def round_trip_ms(vm: Guest, count: int = 200) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        vm.run("true", timeout=30)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


INIT_STEPS = ("modules", "network", "sshd")
"""guests/init's stamps after its first ("mounts": /proc is there to read), in order."""


def init_steps(vm: Guest) -> dict[str, float]:
    """Guest seconds: the kernel and /init until its mounts, then each /init step, from
    the stamps /init leaves in /run/cocolab-init-times."""
    stamps = dict(line.split() for line in
                  vm.run("cat /run/cocolab-init-times", check=True).stdout.splitlines())
    at = {name: float(value) for name, value in stamps.items()}
    steps = {"kernel+mounts": at["mounts"]}
    previous = at["mounts"]
    for name in INIT_STEPS:
        steps[name] = at[name] - previous
        previous = at[name]
    return steps


def suite(*args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/devmem/", "-q",
                           "-p", "no:cacheprovider", *args], cwd=REPO, capture_output=True,
                          text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest tests/devmem/ {' '.join(args)} failed:\n{proc.stdout[-2000:]}")
    return took


def _static_busybox() -> Path | None:
    """vng needs a static busybox for its initramfs; the guest image's .deb cache has one."""
    from cocolab.paths import cache_dir
    debs = sorted(cache_dir("guest", "debs").glob("busybox-static_*.deb"))
    if not debs:
        return None
    out = cache_dir("bench", "busybox")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True)
    return out / "bin/busybox"


def vng(rig: Rig, rounds: int) -> tuple[float | None, str]:
    """virtme-ng booting the same kernel to run `uname -r`, end to end.

    Two things made the old comparison report "vng failed (255)" where vng works by hand:
    vng runs `virtme-run` from PATH, so a vng installed in a venv needs that venv's bin on
    PATH; and vng's guest runs the host's own udev to name its virtio ports, so on a host
    without udev the command's output and exit status never come back (1.42, TCG: exit 255
    and an empty stdout; with `--verbose` the release shows on the console). With udev
    installed it exits 0 (measured: 33 s). A run counts when the guest printed the release;
    vng's own status is reported beside it.
    """
    binary = shutil.which("vng")
    if binary is None:
        return None, "vng not on PATH (pip install virtme-ng, apt-get install udev)"
    argv = [binary, "--run", str(rig.kernel.image), "--exec", "uname -r"]
    if rig.accel.accel == "tcg":
        argv.append("--disable-kvm")
    busybox = shutil.which("busybox") or _static_busybox()
    if busybox:
        argv += ["--busybox", str(busybox)]
    env = {**os.environ, "PATH": f"{Path(binary).parent}:{os.environ.get('PATH', '')}"}
    times, statuses = [], set()
    for _ in range(rounds):
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                              stdin=subprocess.DEVNULL, env=env)
        if rig.kernel.release not in proc.stdout:
            hint = "" if shutil.which("udevadm") else \
                " (no udev on this host: apt-get install udev, which vng's guest runs)"
            return None, (f"{' '.join(argv)} failed ({proc.returncode}){hint}: "
                          f"{proc.stderr[-300:]}")
        times.append(time.monotonic() - start)
        statuses.add(proc.returncode)
    return statistics.median(times), f"{' '.join(argv)} (vng exit status {sorted(statuses)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernel")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-suites", action="store_true",
                        help="skip the timed runs of tests/devmem/")
    args = parser.parse_args()
    if args.kernel:
        os.environ["COCOLAB_KERNEL"] = args.kernel  # the suites' pytest runs too
    rig = Rig(RigOptions())
    with tempfile.TemporaryDirectory(prefix="cocolab-bench-snap-") as tmp:
        store = SnapshotStore(Path(tmp))
        snap = snapshot(rig, store)
        floors, colds, restores = [], [], []
        inits: list[dict[str, float]] = []
        for _ in range(args.rounds):
            floors.append(floor(rig))
            vm = boot(rig)
            colds.append(vm.boot_seconds or 0.0)
            inits.append(init_steps(vm))
            stop(vm)
            vm = boot(rig, Restore(snap))
            restores.append(vm.boot_seconds or 0.0)
            stop(vm)
        vm = boot(rig, Restore(snap))
        rtt = round_trip_ms(vm)
        stop(vm)
    result: dict[str, object] = {
        "kernel": rig.kernel.release, "accel": rig.accel.accel,
        "qemu": f"{rig.qemu_info.binary} {rig.qemu_info.version}", "rounds": args.rounds,
        "floor_boot_s": statistics.median(floors),
        "cold_boot_to_ssh_median_s": statistics.median(colds),
        "restore_to_ssh_median_s": statistics.median(restores),
        "restore_to_ssh_max_s": max(restores),
        "command_rtt_median_ms": rtt,
        "init_steps_median_s": {step: statistics.median(i[step] for i in inits)
                                for step in inits[0]},
        "runs": {"floor": floors, "cold": colds, "restore": restores, "init": inits},
    }
    if not args.no_suites:
        result["boot_ahead_default"] = default_boot_ahead(rig.lane.memory_mib)
        result["devmem_suite_cold_s"] = suite("--no-snapshots", "--boot-ahead", "0")
        result["devmem_suite_cold_ahead_s"] = suite("--no-snapshots")
        suite()  # makes the suite's snapshots, untimed
        result["devmem_suite_warm_s"] = suite("--boot-ahead", "0")
        result["devmem_suite_warm_ahead_s"] = suite()
        result["devmem_suite_n2_s"] = suite("--no-snapshots", "-n", "2", "--dist", "loadgroup")
    result["virtme_ng_median_s"], result["virtme_ng_command"] = vng(rig, args.rounds)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def report(r: dict[str, object]) -> None:
    def ratio(a: str, b: str) -> str:
        x, y = r.get(a), r.get(b)
        return f"{x / y:.2f}x" if isinstance(x, float) and isinstance(y, float) else "n/a"

    rows = [
        ("bare-kernel floor", "floor_boot_s", "s", ""),
        ("cold boot -> first SSH command", "cold_boot_to_ssh_median_s", "s",
         ratio("cold_boot_to_ssh_median_s", "floor_boot_s") + " of the floor"),
        ("restore -> first SSH command", "restore_to_ssh_median_s", "s",
         ratio("restore_to_ssh_median_s", "cold_boot_to_ssh_median_s") + " of a cold boot"),
        ("restore, slowest", "restore_to_ssh_max_s", "s", ""),
        ("command round trip (median of 200)", "command_rtt_median_ms", "ms", ""),
        ("pytest tests/devmem/ --no-snapshots", "devmem_suite_cold_s", "s", "--boot-ahead 0"),
        (f"... with boot-ahead (default, {r.get('boot_ahead_default', '?')})",
         "devmem_suite_cold_ahead_s", "s",
         ratio("devmem_suite_cold_ahead_s", "devmem_suite_cold_s") + " of --boot-ahead 0"),
        ("pytest tests/devmem/ --boot-ahead 0 (warm)", "devmem_suite_warm_s", "s",
         ratio("devmem_suite_warm_s", "devmem_suite_cold_s") + " of --no-snapshots"),
        ("pytest tests/devmem/ (warm, boot-ahead)", "devmem_suite_warm_ahead_s", "s",
         ratio("devmem_suite_warm_ahead_s", "devmem_suite_cold_ahead_s")
         + " of --no-snapshots, both booting ahead"),
        ("pytest tests/devmem/ --no-snapshots -n 2", "devmem_suite_n2_s", "s",
         ratio("devmem_suite_cold_s", "devmem_suite_n2_s") + " faster than serial"),
        ("virtme-ng --exec 'uname -r'", "virtme_ng_median_s", "s",
         ratio("virtme_ng_median_s", "cold_boot_to_ssh_median_s") + " of a cocolab cold boot"),
    ]
    print(f"kernel {r['kernel']}, {r['accel']}, {r['qemu']}, {r['rounds']} rounds")
    for label, key, unit, note in rows:
        value = r.get(key)
        shown = f"{value:8.2f} {unit}" if isinstance(value, float) else "     n/a"
        print(f"  {label:<42} {shown}  {note}")
    steps = r.get("init_steps_median_s")
    if isinstance(steps, dict):
        print("  guest time of a cold boot: " + ", ".join(f"{k} {v:.2f} s"
                                                      for k, v in steps.items()))
    if r.get("virtme_ng_median_s") is None:
        print(f"  virtme-ng: {r['virtme_ng_command']}")


if __name__ == "__main__":
    sys.exit(main())
