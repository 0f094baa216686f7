"""A virtio-rng device the test serves (vhost-user-rng-pci), good and hostile.

Sources (6.12 and 7.3 alike):
- drivers/virtio/virtio_ring.c virtqueue_get_buf_ctx_split(): a used id >= the queue size is
  BAD_RING "id %u out of range", a used id with no buffer "id %u is not a head!"; BAD_RING
  (without DEBUG) logs and marks the queue broken, after which get_buf returns nothing.
- drivers/char/hw_random/virtio-rng.c copy_data(): the device's used len is clamped to the
  driver's buffer ("A malicious or buggy virtio-rng backend can drive either past
  sizeof(vi->data)"); virtio_read() waits with wait_for_completion_killable().
- kernel/hung_task.c: a TASK_KILLABLE wait is never reported as hung.
- 6.1 (Debian 6.1.192) has the same virtio-rng.c; its hwrng core differs: it reads 32 bytes
  from a device as it registers (add_early_randomness), which test_a_used_len_beyond_...
  turns into a reader that never returns.
"""

from __future__ import annotations

import pytest
from guest_side import (
    ENTROPY,
    quiet_khwrngd,
    read_hwrng,
    reads_32_bytes_on_register,
    record_dos,
    run_in_background,
)

from cocolab.assertions import require
from cocolab.devices import Personality
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice
from cocolab.pytest_plugin.markers import apply_finding

pytestmark = [pytest.mark.topology("virtio-backends"), pytest.mark.usefixtures("hostile_lane"),
              pytest.mark.kconfig("HW_RANDOM", "HW_RANDOM_VIRTIO")]

PATTERN = bytes(range(256))


def test_the_guest_reads_the_bytes_the_device_served(vm: Guest, rng: ServedDevice) -> None:
    assert rng.bind() == (True, "")
    assert rng.backend.started and rng.backend.wait(lambda: rng.backend.kicks > 0, 5)
    quiet_khwrngd(vm)
    rng.backend.feed(PATTERN)
    data, status = read_hwrng(vm, 512)
    assert status == "status=0" and len(data) == 512
    assert PATTERN in data, "the fed bytes never reached /dev/hwrng"
    assert data in bytes(rng.backend.served), "the guest read bytes the device never served"


def test_a_used_len_beyond_the_buffer_hands_out_only_what_the_device_wrote(
        vm: Guest, rng: ServedDevice, request: pytest.FixtureRequest) -> None:
    """copy_data() clamps to sizeof(vi->data): without the clamp the reader would get the
    kernel memory after the buffer, which the device never served. The device serves only
    16 byte values, so such memory would show as another byte.

    The clamp leaves data_avail above zero once the buffer is used up, so no new request is
    queued until the next read finds data_idx at the end. A read that asks for more than
    the rest of the buffer takes the rest, then waits for a completion the last request
    already gave: virtio_read()'s "either size is 0 or data_avail is 0" no longer holds.
    /dev/hwrng always reads whole buffers, but 6.1's hwrng core first reads 32 bytes as the
    device registers, and the reader after it waits for ever (killable)."""
    rng.backend.feed(ENTROPY * 4096)  # before binding: the request made at registration too
    rng.backend.personality = Personality.USED_LEN_TOO_LARGE
    require(rng.bind() == (True, ""), "the rng did not bind")
    if reads_32_bytes_on_register(vm):
        apply_finding(request.node, "dos", (
            "6.1: with a used len beyond the buffer, the reader of /dev/hwrng "
            "waits for ever after the hwrng core's 32-byte read at registration "
            "(add_early_randomness, drivers/char/hw_random/core.c): copy_data() "
            "(drivers/char/hw_random/virtio-rng.c) clamps the copy but leaves data_avail "
            "above zero, so virtio_read() waits on a completion no request will bring"))
    data, status = read_hwrng(vm, 512)
    require(all(len_ > served.writable for served in rng.backend.requests
                for _, len_ in served.used), "the personality did not apply")
    assert status == "status=0" and len(data) == 512
    foreign = sorted(set(data) - set(ENTROPY))  # not a substring check: a buffer the clamp
    assert not foreign, (                     # leaves half read is read on, stale bytes too
        f"the guest read byte values the device never serves: {foreign[:8]}")


@pytest.mark.allow_kernel_reports("hung task", reason="a reader left waiting holds the rng's "
                                  "mutex, and khwrngd waits behind it: the denial of service")
def test_a_used_id_returned_twice_hands_out_only_served_bytes(
        vm: Guest, rng: ServedDevice, request: pytest.FixtureRequest) -> None:
    """The security property, not the detection: a duplicate used element cannot be told
    from a genuine completion once the driver has put its one buffer back under the same
    head (virtqueue_get_buf_ctx_split() checks only that the id is in range and an
    outstanding head, drivers/virtio/virtio_ring.c), so the kernel takes the copy as the
    next completion. What a hardened driver must still hold: the reader gets only bytes the
    device served, never the buffer's other content. A reader left waiting is a denial of
    service, which the threat model allows: recorded (6.1, whose hwrng core reads 32 bytes
    as the device registers, leaves it waiting), and the VM is not reused. (This test once
    asserted that the duplicate goes unnoticed: a weakness pinned as a pass.)"""
    rng.backend.personality = Personality.USED_ID_TWICE
    require(rng.bind() == (True, ""), "the rng did not bind")
    quiet_khwrngd(vm)
    rng.backend.feed(PATTERN * 8)
    blocked = run_in_background(vm, "head -c 512 /dev/hwrng > /tmp/hwrng", after=5)
    require(any(len(served.used) == 2 for served in rng.backend.requests),
            "no request was completed twice: the personality did not apply")
    if blocked.waiting:
        record_dos(vm, request, f"a reader of /dev/hwrng: {blocked}")
        return
    data = bytes.fromhex(vm.run("od -An -tx1 -v /tmp/hwrng", check=True).stdout
                         .replace("\n", " ").replace(" ", ""))
    assert len(data) == 512, f"the reader ended with {len(data)} bytes: {blocked}"
    assert data in bytes(rng.backend.served), "the guest read bytes the device never served"


def test_a_used_id_out_of_range_breaks_the_queue_and_the_reader_can_be_killed(
        vm: Guest, rng: ServedDevice) -> None:
    rng.backend.personality = Personality.USED_ID_OUT_OF_RANGE
    vm.dmesg.mark()
    assert rng.bind() == (True, "")
    # the driver asks for entropy as it registers, and bind does not wait for the answer
    assert rng.backend.wait(lambda: bool(rng.backend.requests), 5), "the device was not asked"
    num = rng.backend.requests[0].used[0][0]
    line = rf"virtio_rng virtio\d+: input:id {num} out of range"
    assert rng.backend.wait(lambda: bool(vm.dmesg.since_mark().grep(line)), 5), \
        vm.dmesg.since_mark()
    blocked = run_in_background(vm, "head -c 64 /dev/hwrng", after=3 * 2 + 1)
    require(blocked.waiting in ("S", "D"), f"the reader did not wait on the broken queue: "
            f"state {blocked.waiting!r}, {blocked.output.strip()!r}")
    assert blocked.killed, f"SIGKILL did not end the reader: {blocked}"


def test_a_request_never_completed_leaves_a_killable_reader(vm: Guest,
                                                             rng: ServedDevice) -> None:
    rng.backend.personality = Personality.NEVER_COMPLETE
    assert rng.bind() == (True, "")
    blocked = run_in_background(vm, "head -c 64 /dev/hwrng", after=7)
    # the device's side, a precondition (it is the personality, not the kernel): a request
    # was held back, and the reader waited on it, rather than failing at once
    require(any(r.used == [] for r in rng.backend.requests), "no request was held back")
    require(blocked.waiting in ("S", "D"), f"the reader did not wait: state "
            f"{blocked.waiting!r}, {blocked.output.strip()!r}")
    assert blocked.killed, f"SIGKILL did not end the reader: {blocked}"
