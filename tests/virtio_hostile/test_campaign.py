"""The seeded campaign: each round, a device answers the driver as `Campaign(seed, round)`
draws (devices/campaign.py: wrong used ids and lengths, completions given twice or never,
random data and status), while the guest binds the driver and uses it. One test per device
and round: `pytest tests/virtio_hostile/test_campaign.py --device-seed 7 --device-rounds 50`,
and `-k 'rng and round-3'` runs one round again exactly.

By the threat model (a hardened driver allows no memory-safety issue and no information
leak; a denial of service is allowed, and recorded):
- a kernel report (KASAN, UBSAN, KFENCE, WARN, lockdep, a hung task: the plugin's check) or a
  crash fails the round, with the seed, round and the device's log in its bundle;
- for the rng, every byte the guest reads must be one of the 16 values the device serves in
  a round (fed, never random): any other came from the guest's memory, an information leak;
- a reader left waiting (killable or not) passes, recorded as a `dos` finding, and retires
  the VM, since the next round could not trust it; so do the kernel's reports of tasks
  waiting behind it (a hung task: khwrngd on the rng's mutex), which are kept beside the
  result (@pytest.mark.allow_kernel_reports: the denial-of-service kinds only).
A refused bind is the driver's defence, not a failure; a bind left waiting (a probe on a
request the device never answers: seed 2 on the hardening lane) is a dos like any other.
The campaign runs in CI with the default seed and two rounds a device; bench/campaign.py
runs long ones.
"""

from __future__ import annotations

import pytest
from guest_side import (
    ENTROPY,
    bind_in_background,
    quiet_khwrngd,
    record_dos,
    run_in_background,
)

from cocolab.assertions import require
from cocolab.devices.campaign import Campaign
from cocolab.errors import GuestCrashed
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice

pytestmark = [
    pytest.mark.topology("virtio-backends"), pytest.mark.usefixtures("hostile_lane"),
    pytest.mark.allow_kernel_reports("hung task", "RCU stall", "soft lockup", reason=(
        "a round may leave a task waiting on the device, and what waits behind it (khwrngd "
        "on the rng's mutex): a denial of service, which the threat model allows"))]

WAIT_S = 4.0
"""How long the guest's I/O may take before its task is looked at (TCG is slow, the
requests are few)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "round_" in metafunc.fixturenames:
        seed = metafunc.config.getoption("cocolab_device_seed")
        rounds = metafunc.config.getoption("cocolab_device_rounds")
        if rounds < 1:
            raise pytest.UsageError(f"--device-rounds {rounds}: give 1 or more")
        metafunc.parametrize("seed", [seed], ids=[f"seed-{seed}"])
        metafunc.parametrize("round_", range(rounds), ids=[f"round-{r}" for r in
                                                           range(rounds)])


def bound(vm: Guest, device: ServedDevice, campaign: Campaign,
          request: pytest.FixtureRequest) -> bool:
    """Bind the device's driver under the campaign: whether it bound. A refusal is the
    driver's defence; a bind left waiting, a recorded dos."""
    waiting = bind_in_background(vm, device)
    if waiting is not None:
        record_dos(vm, request, f"binding {device.ident}, {campaign.summary()}: {waiting}")
        return False
    return device.bound() == device.driver


@pytest.mark.kconfig("HW_RANDOM", "HW_RANDOM_VIRTIO")
def test_rng_round(vm: Guest, rng: ServedDevice, seed: int, round_: int,
                   request: pytest.FixtureRequest) -> None:
    campaign = Campaign(seed, round_)
    rng.backend.feed(ENTROPY * 4096)  # type: ignore[attr-defined]  # 64 KiB: never exhausted
    rng.backend.campaign = campaign
    try:
        if not bound(vm, rng, campaign, request):
            return
        quiet_khwrngd(vm)
        blocked = run_in_background(vm, "head -c 1024 /dev/hwrng > /tmp/hwrng", after=WAIT_S)
        if blocked.waiting:
            record_dos(vm, request, f"a reader of /dev/hwrng, {campaign.summary()}: {blocked}")
            return
        read = bytes.fromhex(vm.run("od -An -tx1 -v /tmp/hwrng", check=True)
                             .stdout.replace("\n", " ").replace(" ", ""))
    except GuestCrashed as exc:
        raise AssertionError(f"{campaign.name}: the guest crashed ({campaign.summary()}): "
                             f"{exc}") from exc
    served = bytes(rng.backend.served)  # type: ignore[attr-defined]
    require(set(served) <= set(ENTROPY), "the device served bytes beyond what it was fed")
    foreign = sorted(set(read) - set(ENTROPY))
    assert not foreign, (f"{campaign.name}: /dev/hwrng gave bytes the device never serves "
                         f"({', '.join(f'{b:#04x}' for b in foreign[:8])}): they came from "
                         f"the guest's memory ({campaign.summary()})")


@pytest.mark.kconfig("VIRTIO_BLK")
def test_blk_round(vm: Guest, disk: ServedDevice, seed: int, round_: int,
                   request: pytest.FixtureRequest) -> None:
    campaign = Campaign(seed, round_)
    disk.backend.campaign = campaign
    try:
        if not bound(vm, disk, campaign, request):
            return
        dev = vm.run(f"ls /sys/bus/virtio/devices/{disk.virtio_name()}/block/ 2>/dev/null"
                     ).stdout.split()
        if not dev:
            return  # no disk came of it (its identify or capacity read went wrong)
        blocked = run_in_background(
            vm, f"dd if=/dev/{dev[0]} of=/dev/null bs=4096 count=32 iflag=direct && "
                f"dd if=/dev/zero of=/dev/{dev[0]} bs=4096 count=8 seek=64 oflag=direct",
            after=WAIT_S)
        if blocked.waiting:
            record_dos(vm, request, f"I/O on /dev/{dev[0]}, {campaign.summary()}: {blocked}")
    except GuestCrashed as exc:
        raise AssertionError(f"{campaign.name}: the guest crashed ({campaign.summary()}): "
                             f"{exc}") from exc
