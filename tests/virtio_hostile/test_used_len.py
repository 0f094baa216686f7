"""The used-length matrix: each driver served by a device that publishes a used len of 0,
one byte over its buffer, a page over, and 0xffffffff, on every request. virtio 1.2 §2.7.8
makes len the bytes the device wrote; since 5.16 virtio_ring no longer checks it against the
buffer (the check was reverted), so each driver must (kernel-behaviors.md §6).

What must hold, whatever the kernel does with the length (the threat model: no memory-safety
issue, no information leak; a denial of service is allowed and recorded):
- virtio-rng: every byte /dev/hwrng gives is one the device served (it serves 16 values);
  copy_data() clamps to the driver's buffer (drivers/char/hw_random/virtio-rng.c);
- virtio-blk: a direct read returns the medium or fails; virtio_blk takes its result from
  the status byte, not from len (virtblk_done(), drivers/block/virtio_blk.c);
- no KASAN, UBSAN, KFENCE or WARN report (the plugin's check; the hardening lane has them).
A reader left waiting is a recorded `dos` and retires the VM.
"""

from __future__ import annotations

import pytest
from guest_side import ENTROPY, quiet_khwrngd, record_dos, run_in_background

from cocolab.assertions import require
from cocolab.devices.backend import USED_LENGTHS, Personality
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice

pytestmark = [
    pytest.mark.topology("virtio-backends"), pytest.mark.usefixtures("hostile_lane"),
    pytest.mark.allow_kernel_reports("hung task", reason=(
        "a length the driver cannot use may leave a task waiting on the device, and "
        "khwrngd behind it on the rng's mutex: a denial of service, recorded"))]

WAIT_S = 4.0
LENGTHS = pytest.mark.parametrize("personality", USED_LENGTHS,
                                  ids=[p.value for p in USED_LENGTHS])


@pytest.mark.kconfig("HW_RANDOM", "HW_RANDOM_VIRTIO")
@LENGTHS
def test_rng_hands_out_only_served_bytes(vm: Guest, rng: ServedDevice,
                                         personality: Personality,
                                         request: pytest.FixtureRequest) -> None:
    rng.backend.feed(ENTROPY * 4096)  # type: ignore[attr-defined]
    rng.backend.personality = personality
    require(rng.bind() == (True, ""), "the rng did not bind")
    quiet_khwrngd(vm)
    blocked = run_in_background(vm, "head -c 256 /dev/hwrng > /tmp/hwrng", after=WAIT_S)
    require(any(served.used for served in rng.backend.requests), "no request was answered")
    if blocked.waiting:
        record_dos(vm, request, f"a reader of /dev/hwrng under {personality.value}: {blocked}")
        return
    read = bytes.fromhex(vm.run("od -An -tx1 -v /tmp/hwrng", check=True)
                         .stdout.replace("\n", " ").replace(" ", ""))
    foreign = sorted(set(read) - set(ENTROPY))
    assert not foreign, (f"{personality.value}: /dev/hwrng gave byte values the device never "
                         f"serves: {', '.join(f'{b:#04x}' for b in foreign[:8])}")


def foreign_bytes(vm: Guest, rng: ServedDevice) -> list[int]:
    """Byte values in 256 bytes of /dev/hwrng that are not among the 16 the test feeds."""
    quiet_khwrngd(vm)
    read = bytes.fromhex(vm.run("head -c 256 /dev/hwrng | od -An -tx1 -v", timeout=30,
                                check=True).stdout.replace("\n", " ").replace(" ", ""))
    return sorted(set(read) - set(ENTROPY))


@pytest.mark.kconfig("HW_RANDOM", "HW_RANDOM_VIRTIO")
def test_the_foreign_byte_check_sees_bytes_the_test_did_not_feed(vm: Guest,
                                                                 rng: ServedDevice) -> None:
    """The counterpart: the same check, on a good device that serves random bytes once
    nothing is fed, does find bytes outside the 16 (so its silence above means something)."""
    require(rng.bind() == (True, ""), "the rng did not bind")
    assert foreign_bytes(vm, rng), "256 random bytes all fell among 16 values"


@pytest.mark.kconfig("VIRTIO_BLK")
@LENGTHS
def test_blk_reads_the_medium_or_fails(vm: Guest, disk: ServedDevice,
                                       personality: Personality,
                                       request: pytest.FixtureRequest) -> None:
    disk.backend.load(b"\x5a" * 65536)  # type: ignore[attr-defined]
    disk.backend.personality = personality
    require(disk.bind() == (True, ""), "the disk did not bind")
    dev = disk.block_device()
    blocked = run_in_background(vm, f"dd if=/dev/{dev} of=/tmp/blk bs=4096 count=16 "
                                     "iflag=direct", after=WAIT_S)
    if blocked.waiting:
        record_dos(vm, request, f"a read of /dev/{dev} under {personality.value}: {blocked}")
        return
    data = vm.run("od -An -tx1 /tmp/blk | sort -u", check=True).stdout.split()
    if "status=0" in blocked.output:
        assert data in (["5a"] * 16 + ["*"], ["5a"] * 16), (
            f"{personality.value}: the read succeeded with data the medium does not hold: "
            f"{data[:20]}")
    else:
        assert "Input/output error" in blocked.output, blocked
