"""The same devices on packed rings (virtio 1.2 §2.8; topology virtio-backends-packed:
packed=on, so QEMU passes the back-end's VIRTIO_F_RING_PACKED on and the driver negotiates
it): the driver's packed path in drivers/virtio/virtio_ring.c (virtqueue_get_buf_ctx_packed,
detach_buf_packed) meets the same used-length matrix and the same seeded campaign as the
split one, from the tests of test_used_len.py and test_campaign.py, run here again."""

from __future__ import annotations

import hashlib

import pytest
from guest_side import read_hwrng
from test_campaign import pytest_generate_tests, test_blk_round, test_rng_round
from test_used_len import (
    test_blk_reads_the_medium_or_fails,
    test_rng_hands_out_only_served_bytes,
    test_the_foreign_byte_check_sees_bytes_the_test_did_not_feed,
)

from cocolab.assertions import require
from cocolab.devices.protocol import F_RING_PACKED
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice

pytestmark = [
    pytest.mark.topology("virtio-backends-packed"), pytest.mark.usefixtures("hostile_lane"),
    pytest.mark.allow_kernel_reports("hung task", "RCU stall", "soft lockup", reason=(
        "a hostile length or campaign round may leave a task waiting on the device: a "
        "denial of service, recorded"))]

__all__ = ["pytest_generate_tests", "test_blk_reads_the_medium_or_fails", "test_blk_round",
           "test_rng_hands_out_only_served_bytes", "test_rng_round",
           "test_the_foreign_byte_check_sees_bytes_the_test_did_not_feed"]

PATTERN = bytes(range(256))


@pytest.mark.kconfig("HW_RANDOM", "HW_RANDOM_VIRTIO")
def test_the_rng_runs_on_a_packed_ring(vm: Guest, rng: ServedDevice) -> None:
    require(rng.bind() == (True, ""), "the rng did not bind")
    assert rng.backend.acked(F_RING_PACKED), "the driver did not negotiate a packed ring"
    assert rng.backend.layout(0) == "packed"
    rng.backend.feed(PATTERN)  # type: ignore[attr-defined]
    data, status = read_hwrng(vm, 512)
    assert status == "status=0" and PATTERN in data


@pytest.mark.kconfig("VIRTIO_BLK")
def test_the_disk_reads_and_writes_on_a_packed_ring(vm: Guest, disk: ServedDevice) -> None:
    disk.backend.load(bytes(range(256)) * 256)  # type: ignore[attr-defined]
    require(disk.bind() == (True, ""), "the disk did not bind")
    assert disk.backend.acked(F_RING_PACKED), "the driver did not negotiate a packed ring"
    dev = disk.block_device()
    r = vm.run(f"dd if=/dev/{dev} bs=4096 count=16 iflag=direct | md5sum", check=True)
    assert r.stdout.split()[0] == hashlib.md5(bytes(range(256)) * 256).hexdigest()
    vm.run(f"printf packed-ring-write | dd of=/dev/{dev} bs=512 seek=200 conv=sync "
           "oflag=direct", check=True)
    assert disk.backend.medium()[200 * 512:200 * 512 + 17] == b"packed-ring-write"  # type: ignore
