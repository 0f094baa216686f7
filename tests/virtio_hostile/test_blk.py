"""A virtio-blk device the test serves (vhost-user-blk-pci), good and hostile.

Sources (6.12; 7.3 reads the same in each place; 6.1 where it differs, as the tests say):
- drivers/block/virtio_blk.c virtblk_result(): a status other than OK, UNSUPP and the zone
  ones is BLK_STS_IOERR; virtblk_read_limits(): "We need at least one SG element, whatever
  they say" (seg_max 0 becomes 1), blk_size is taken as the logical block size;
  virtblk_update_capacity(): capacity is used as the device says ("Host must always specify
  the capacity"); virtio_mq_ops has no .timeout, so blk-mq re-arms a request's timer for
  ever and a request the device never completes is never failed. Nor does khungtaskd say
  so: block/blk-core.c blk_io_schedule() sleeps in slices of hung_task_timeout_secs / 2 "to
  prevent hang_check timer from firing", so the stuck reader is never reported as hung.
- include/linux/blkdev.h blk_validate_block_size(): a block size that is not a power of two
  between 512 and PAGE_SIZE is -EINVAL ("Invalid logical block size", block/blk-settings.c).
- drivers/virtio/virtio_ring.c: BAD_RING, as in test_rng.py; once broken, virtqueue_add
  fails and virtio_queue_rq() answers the next requests with an I/O error.
- hw/block/vhost-user-blk.c (QEMU) vhost_user_blk_update_config(): "Our num_queues overrides
  the device backend": the guest never reads a back-end's num_queues.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from guest_side import HUNG_TASK_TIMEOUT_S, run_in_background

from cocolab.assertions import require
from cocolab.devices import Personality
from cocolab.guest import Guest
from cocolab.guest.cma import kernel_version
from cocolab.guest.virtio import ServedDevice
from cocolab.pytest_plugin.markers import apply_finding

pytestmark = [pytest.mark.topology("virtio-backends"), pytest.mark.usefixtures("hostile_lane"),
              pytest.mark.kconfig("VIRTIO_BLK")]

BLK_DEV_MAX_SECTORS = (2**63 - 1) >> 9
"""block/blk.h (7.3): LLONG_MAX >> 9."""
WAIT_S = 3 * HUNG_TASK_TIMEOUT_S + 2
"""Long enough for khungtaskd to have reported a task hung uninterruptibly (were it to)."""
NOTE = b"written by the test on the host, read in the guest through a Python virtio-blk\n"


def ext2_image(tmp_path: Path) -> bytes:
    """A 4 MiB ext2 filesystem holding note.txt, made with mke2fs -d (e2fsprogs)."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "note.txt").write_bytes(NOTE)
    image = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-d",
                    str(tmp_path / "root"), str(image), "4096"], check=True)
    return image.read_bytes()


@pytest.mark.kconfig("EXT4_FS")  # which mounts the test's ext2 image
def test_a_filesystem_the_test_made_mounts_and_reads_back(vm: Guest, disk: ServedDevice,
                                                          tmp_path: Path) -> None:
    disk.backend.load(ext2_image(tmp_path))  # type: ignore[attr-defined]
    assert disk.bind() == (True, "")
    vm.modprobe("ext4")  # Debian's ext4 mounts ext2
    if vm.has_module("crc32c_generic"):  # 6.12's ext4 wants it; a soft dependency
        vm.modprobe("crc32c_generic")
    dev = disk.block_device()
    vm.run(f"mkdir -p /mnt/vu && mount -t ext2 /dev/{dev} /mnt/vu", check=True)
    try:
        assert vm.run("cat /mnt/vu/note.txt", check=True).stdout.encode() == NOTE
        vm.run("echo from the guest > /mnt/vu/back.txt && sync", check=True)
    finally:
        vm.run("umount /mnt/vu", check=True)
    assert b"from the guest\n" in disk.backend.medium()  # type: ignore[attr-defined]
    reads = [r for r in disk.backend.requests if r.what.startswith("read")]
    writes = [r for r in disk.backend.requests if r.what.startswith("write")]
    assert reads and writes, "the device saw no read or no write"


def test_an_undefined_status_fails_the_read_with_eio(vm: Guest, disk: ServedDevice) -> None:
    disk.backend.personality = Personality.BAD_STATUS
    vm.dmesg.mark()
    assert disk.bind() == (True, "")
    dev = disk.block_device()
    r = vm.run(f"dd if=/dev/{dev} of=/dev/null bs=4096 count=1 iflag=direct")
    assert r.returncode != 0 and "Input/output error" in r.stderr, r
    assert vm.dmesg.since_mark().grep(rf"I/O error, dev {dev}, sector 0 op 0x0:\(READ\)")


def test_a_used_len_beyond_the_buffer_is_ignored(vm: Guest, disk: ServedDevice) -> None:
    """virtio_blk takes its result from the status byte, not from the used len."""
    disk.backend.load(b"\x5a" * 4096)  # type: ignore[attr-defined]
    disk.backend.personality = Personality.USED_LEN_TOO_LARGE
    assert disk.bind() == (True, "")
    r = vm.run(f"dd if=/dev/{disk.block_device()} bs=4096 count=1 iflag=direct | od -An -tx1 "
               "| sort -u", check=True)
    assert r.stdout.split() == ["5a"] * 16 + ["*"], r.stdout  # od folds repeated lines


def test_a_used_id_returned_twice_breaks_the_queue_and_fails_the_io(
        vm: Guest, disk: ServedDevice) -> None:
    assert disk.bind() == (True, "")
    disk.backend.personality = Personality.USED_ID_TWICE
    vm.dmesg.mark()
    blocked = run_in_background(vm, f"dd if=/dev/{disk.block_device()} of=/dev/null bs=4096 "
                                     "count=4 skip=100 iflag=direct", after=3)
    assert blocked.state == "" and "Input/output error" in blocked.output, blocked
    log = vm.dmesg.since_mark()
    assert log.grep(r"virtio_blk virtio\d+: req\.\d+:id \d+ is not a head!"), log
    vm.retire("its disk's queue is broken (by design of the test)", planned=True)


NO_TIMEOUT = ("virtio_mq_ops has no .timeout (drivers/block/virtio_blk.c), blk-mq re-arms the "
              "timer, so the reader stays in D state for ever, SIGKILL or not")


@pytest.mark.parametrize("personality, kernel_says", [
    pytest.param(Personality.USED_ID_OUT_OF_RANGE,
                 r"virtio_blk virtio\d+: req\.\d+:id 128 out of range",
                 marks=pytest.mark.finding("dos", (
                     "6.1, 6.12 and 7.2: once BAD_RING marks the queue broken, the "
                     f"request it took is never completed or failed; {NO_TIMEOUT}"))),
    pytest.param(Personality.NEVER_COMPLETE, None,
                 marks=pytest.mark.finding("dos", (
                     "6.1, 6.12 and 7.2: a request the device never completes is never "
                     f"failed; {NO_TIMEOUT}"))),
], ids=["used-id-out-of-range", "never-complete"])
def test_a_request_the_device_drops_is_failed_in_time(
        vm: Guest, disk: ServedDevice, personality: Personality, kernel_says: str | None) -> None:
    """The finding is the last assertion alone (a strict xfail with raises=AssertionError):
    what leads up to it is required, so a device that did not misbehave, or a kernel that
    did not see it, is an error, never the finding."""
    require(disk.bind() == (True, ""), "the disk did not bind")
    disk.backend.personality = personality
    vm.dmesg.mark()
    blocked = run_in_background(vm, f"dd if=/dev/{disk.block_device()} of=/dev/null bs=4096 "
                                     "count=1 skip=100 iflag=direct", after=WAIT_S)
    vm.retire("a task waits on its disk for ever", planned=True)
    if kernel_says is not None:
        require(vm.dmesg.since_mark().grep(kernel_says), f"the kernel did not say "
                f"{kernel_says!r}: the queue was not marked broken")
    else:
        require(any(r.used == [] for r in disk.backend.requests), "no request was held back")
    require(blocked.waiting in ("S", "D"), f"the reader did not wait: {blocked}")
    assert blocked.state != "D", "the reader is stuck in D state on a request never failed"


# --- config space: QEMU reads it once, when it realizes the device; these devices start
# --- hostile (topology virtio-backends)

def test_a_block_size_not_a_power_of_two_is_refused(vm: Guest) -> None:
    """Refused, and never started, each kernel in its own words (measured):
    - 6.12: -EINVAL from the block layer's limits ("Invalid logical block size (1000)",
      block/blk-settings.c blk_validate_limits()), the driver core naming the device;
    - 6.1: virtblk_probe() calls blk_validate_block_size() itself ("virtio_blk: invalid block
      size: 0x%x", drivers/block/virtio_blk.c), really_probe() says "%s: probe of %s failed
      with error %d" (drivers/base/dd.c);
    - 7.3.4 as cocolab builds it (minimal config): the probe fails with -ENOENT and no
      block-layer line ("probe with driver virtio_blk failed with error -2"); which call
      returns it is not pinned down (issue 34's note)."""
    disk = vm.served("disk-bs1000")
    vm.dmesg.mark()
    bound, error = disk.bind()
    assert not bound, "a block size of 1000 was accepted"
    log = vm.dmesg.since_mark()
    if "No such file or directory" in error:
        assert log.grep(r"virtio_blk virtio\d+: probe with driver virtio_blk failed with "
                        r"error -2"), log
    else:
        assert "Invalid argument" in error, error
        assert log.contains("Invalid logical block size (1000)") or \
            log.grep(r"virtio_blk virtio\d+: virtio_blk: invalid block size: 0x3e8")
        assert log.grep(r"virtio_blk virtio\d+: probe with driver virtio_blk failed with "
                        r"error -22") or log.grep(r"virtio_blk: probe of virtio\d+ failed with "
                                                  r"error -22")
    assert disk.backend.messages().count("SET_VRING_KICK") == 0, "started a refused device"


def test_seg_max_zero_becomes_one_segment(vm: Guest) -> None:
    disk = vm.served("disk-seg0")
    assert disk.bind() == (True, "")
    try:
        dev = disk.block_device()
        assert vm.run(f"cat /sys/block/{dev}/queue/max_segments", check=True).stdout.strip() == "1"
        vm.run(f"dd if=/dev/{dev} of=/dev/null bs=65536 count=1 iflag=direct", check=True)
    finally:
        disk.unbind()


def test_a_capacity_beyond_a_64_bit_byte_count_is_truncated(
        vm: Guest, request: pytest.FixtureRequest) -> None:
    """7.3's set_capacity() (block/genhd.c) truncates to BLK_DEV_MAX_SECTORS, the most
    sectors whose byte count fits a loff_t, and says so once. 6.12's and 6.1's take any count:
    a capacity of 2^64 - 1 sectors is a disk whose size in bytes wraps around 64 bits."""
    if kernel_version(vm.kernel_release) < (7, 0):
        # an integer overflow in the disk's size: classed by what it is, memory safety
        apply_finding(request.node, "memory-safety", (
            "6.1 and 6.12: set_capacity() (block/genhd.c) has no bound, and "
            "virtblk_update_capacity() takes the device's capacity as given: the size in "
            "bytes wraps around 64 bits"))
    disk = vm.served("disk-huge")
    require(disk.bind() == (True, ""), "the huge disk did not bind")
    try:
        dev = disk.block_device()
        size = int(vm.run(f"cat /sys/block/{dev}/size", check=True).stdout)
        assert size == BLK_DEV_MAX_SECTORS, f"{size} sectors: {size * 512} bytes"
        assert vm.dmesg.read().contains(f"{dev}: truncate capacity from -1 to {size}")
        vm.run(f"dd if=/dev/{dev} of=/dev/null bs=4096 count=1 iflag=direct", check=True)
    finally:
        disk.unbind()


@pytest.mark.parametrize("ident", ["disk-nq0", "disk-nq65535"])
def test_a_back_end_num_queues_never_reaches_the_guest(vm: Guest, cocolab_rig: object,
                                                        ident: str) -> None:
    """QEMU replaces num_queues with its own (one per vCPU) before the guest reads config
    space: what is asserted is QEMU's shield, so a hostile num_queues needs a hostile QEMU,
    not a vhost-user back-end (see the issue 25 note)."""
    disk = vm.served(ident)
    assert disk.bind() == (True, "")
    try:
        queues = vm.run(f"ls /sys/block/{disk.block_device()}/mq", check=True).stdout.split()
        assert len(queues) == vm.config.cpus
        assert disk.backend.acked(12), "VIRTIO_BLK_F_MQ was not negotiated"
    finally:
        disk.unbind()
