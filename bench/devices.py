#!/usr/bin/env python3
"""What a Python device back-end costs: boot time with vhost-user devices, and the requests
per second one serves.

    python bench/devices.py [--rounds 5] [--kernel debian:trixie] [--json devices.json]

Per round, interleaved: a cold boot of the lane's plain VM to its first SSH command, the same
VM with one vhost-user-blk device (topology virtio-backends-platform: two devices, here
one bound), and the same with seven (topology virtio-backends). Then, on one VM, virtio-blk
reads served by the Python back-end: `dd iflag=direct` of 4 KiB and of 64 KiB requests,
timed in the guest, and the count of requests the back-end saw. Ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from cocolab.guest import Guest
from cocolab.rig import Rig, RigOptions


def boot(rig: Rig, topology: str | None) -> Guest:
    config, view = rig.plan(topology=topology)
    vm = rig.guest(config, Path(tempfile.mkdtemp(prefix="cocolab-bench-dev-")), "bench", view)
    vm.launch(rig.options.boot_timeout)
    return vm


def stop(vm: Guest) -> None:
    vm.shutdown()
    shutil.rmtree(vm.workdir, ignore_errors=True)


def throughput(vm: Guest, block: int, total: int) -> dict[str, float]:
    """Read `total` bytes in `block`-sized direct reads from the served disk; the guest's
    own clock times it."""
    disk = vm.served("disk-plat")
    if disk.bound() is None:
        assert disk.bind() == (True, ""), "the served disk did not bind"
    dev = disk.block_device()
    count = total // block
    before = len(disk.backend.requests)
    out = vm.run(f"a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/{dev} of=/dev/null bs={block} "
                 f"count={count} iflag=direct 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); "
                 "echo $a $b", check=True, timeout=600).stdout.split()
    seconds = float(out[1]) - float(out[0])
    served = len(disk.backend.requests) - before
    return {"block": block, "requests": served, "seconds": seconds,
            "requests_per_s": served / seconds, "mib_per_s": total / seconds / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernel")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.kernel:
        os.environ["COCOLAB_KERNEL"] = args.kernel
    rig = Rig(RigOptions())
    runs: dict[str, list[float]] = {"plain": [], "one": [], "seven": []}
    for _ in range(args.rounds):
        for name, topology in (("plain", None), ("one", "virtio-backends-platform"),
                               ("seven", "virtio-backends")):
            vm = boot(rig, topology)
            runs[name].append(vm.boot_seconds or 0.0)
            stop(vm)
    vm = boot(rig, "virtio-backends-platform")
    try:
        reads = [throughput(vm, 4096, 8 << 20), throughput(vm, 65536, 16 << 20)]
    finally:
        stop(vm)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    result = {"kernel": rig.kernel.release, "accel": rig.accel.accel,
              "qemu": f"{rig.qemu_info.binary} {rig.qemu_info.version}", "rounds": args.rounds,
              "cold_boot_median_s": medians, "runs": runs, "reads": reads}
    print(f"kernel {rig.kernel.release}, {rig.accel.accel}, {result['qemu']}, "
          f"{args.rounds} rounds")
    print(f"  cold boot, plain VM                  {medians['plain']:6.2f} s")
    print(f"  cold boot, 2 vhost-user devices       {medians['one']:6.2f} s  "
          f"{medians['one'] / medians['plain']:.2f}x of plain")
    print(f"  cold boot, 7 vhost-user devices       {medians['seven']:6.2f} s  "
          f"{medians['seven'] / medians['plain']:.2f}x of plain")
    for r in reads:
        print(f"  direct reads of {r['block'] // 1024:>2} KiB: {r['requests']:6.0f} requests in "
              f"{r['seconds']:.2f} s: {r['requests_per_s']:7.0f} requests/s, "
              f"{r['mib_per_s']:.1f} MiB/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
