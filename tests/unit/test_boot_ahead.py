"""The pool's boot-ahead, with boots that are function calls: which VM boots when, on which
thread, and what becomes of a VM booted ahead that fails, or that no test takes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cocolab.errors import BootError
from cocolab.pytest_plugin.pool import VMPool, default_boot_ahead, spare_guests


@dataclass(frozen=True)
class Request:
    name: str

    def key(self) -> str:
        return self.name

    def describe(self) -> str:
        return f"VM {self.name}"


@dataclass
class FakeGuest:
    name: str
    booted_on: str
    retired: str | None = None
    shut: list[str] = field(default_factory=list)

    def check_alive(self) -> None:
        pass

    def shutdown(self) -> None:
        self.shut.append(threading.current_thread().name)


A, B, C = Request("a"), Request("b"), Request("c")


class Pool(VMPool):
    """A VMPool whose boot() takes `seconds` (or `slow[name]`) and fails for the names in
    `failing`."""

    def __init__(self, ahead: int, seconds: float = 0.05, failing: tuple[str, ...] = (),
                 hold: int | None = None, slow: dict[str, float] | None = None):
        super().__init__(rig=None, workdir=Path("/nonexistent"), boot_ahead=ahead,  # type: ignore[arg-type]
                         hold=hold)
        self.seconds, self.failing, self.slow = seconds, failing, slow or {}
        self.booted: dict[str, FakeGuest] = {}
        self.boots: list[str] = []
        self.started: dict[str, float] = {}

    def boot(self, request: Any, nodeid: str) -> Any:
        self.boots.append(request.name)
        self.started[request.name] = time.monotonic()
        time.sleep(self.slow.get(request.name, self.seconds))
        if request.name in self.failing:
            raise BootError(f"{request.name} would not boot")
        guest = FakeGuest(request.name, threading.current_thread().name)
        self.booted[request.name] = guest
        return guest


def eventually(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def planned(pool: Pool, *wants: tuple[Request, int]) -> Pool:
    for request, tests in wants:
        pool.wanted[request.key()] += tests
    pool.plan([(request, f"test_{request.name}") for request, _ in wants])
    return pool


def test_the_next_vm_boots_while_the_current_ones_tests_run() -> None:
    pool = planned(Pool(ahead=1), (A, 2), (B, 1), (C, 1))
    a = pool.acquire(A, "test_a")
    assert a.booted_on == "MainThread"
    pool.release(A)
    pool.release(A)
    b = pool.acquire(B, "test_b")
    assert b.booted_on.startswith("cocolab-boot-ahead")
    pool.release(B)
    c = pool.acquire(C, "test_c")
    assert c.booted_on.startswith("cocolab-boot-ahead")
    pool.release(C)
    pool.close()
    assert pool.booted_ahead == 2
    assert all(guest.shut for guest in pool.booted.values()), "a VM was left running"


def test_off_boots_each_vm_when_its_first_test_comes() -> None:
    pool = planned(Pool(ahead=0), (A, 1), (B, 1))
    pool.acquire(A, "test_a")
    assert list(pool.booted) == ["a"]
    pool.release(A)
    assert pool.acquire(B, "test_b").booted_on == "MainThread"
    pool.close()


def test_a_boot_ahead_that_fails_fails_the_test_that_wanted_it() -> None:
    pool = planned(Pool(ahead=1, failing=("b",)), (A, 1), (B, 1))
    pool.acquire(A, "test_a")
    pool.release(A)
    with pytest.raises(BootError, match="b would not boot"):
        pool.acquire(B, "test_b")
    pool.close()


def test_a_vm_booted_ahead_for_tests_that_all_skipped_is_shut_down() -> None:
    pool = planned(Pool(ahead=1, seconds=0.2), (A, 1), (B, 1), (C, 1))
    pool.acquire(A, "test_a")
    pool.release(B)  # test_b skipped before taking its VM, which is still booting
    pool.release(A)
    deadline = time.monotonic() + 5
    while not (pool.booted.get("b") and pool.booted["b"].shut) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.booted["b"].shut, "the unused VM booted ahead still runs"
    pool.close()


def test_close_shuts_down_what_is_still_booting_ahead() -> None:
    pool = planned(Pool(ahead=1, seconds=0.3), (A, 1), (B, 1))
    pool.acquire(A, "test_a")  # B starts booting ahead; then -x ends the run
    pool.close()
    assert pool.booted["b"].shut and pool.booted["a"].shut


def test_at_most_n_boot_ahead_at_a_time_one_fewer_while_the_run_boots_its_own() -> None:
    pool = planned(Pool(ahead=2, hold=4, seconds=0.3, slow={"a": 0.15}), (A, 1), (B, 1),
                   (C, 1), (Request("d"), 1))
    pool.acquire(A, "test_a")  # while A booted here, B alone booted ahead; then C joined
    assert sorted(pool._ahead) == ["b", "c"]
    assert pool.started["c"] >= pool.started["a"] + 0.15, "C slowed the boot the test awaited"
    assert sorted(n for n, f in pool._ahead.items() if not f.done()) == ["b", "c"]
    pool.close()


D = Request("d")


def test_a_boot_that_ends_starts_the_next_while_the_same_tests_run() -> None:
    pool = planned(Pool(ahead=1, hold=2), (A, 1), (B, 1), (C, 1), (D, 1))
    pool.acquire(A, "test_a")  # and A's test runs on: B boots, then C, never D (hold 2)
    assert eventually(lambda: "c" in pool.booted)
    time.sleep(0.2)
    assert sorted(pool.boots) == ["a", "b", "c"]
    pool.release(A)
    pool.acquire(B, "test_b")  # B taken: D may boot
    assert eventually(lambda: "d" in pool.booted)
    pool.close()
    assert all(guest.shut for guest in pool.booted.values()), "a VM was left running"


def test_a_vm_being_taken_is_never_booted_again_by_a_boot_that_ends_meanwhile() -> None:
    # B is awaited by its test while C's boot ends, which looks ahead: B is not in the
    # booted-ahead set then, nor yet the pool's; it must not boot twice (seen as a QEMU
    # left running until the run's end, before the pool kept its position in the plan).
    pool = planned(Pool(ahead=2, hold=4, slow={"b": 0.3, "c": 0.05}), (A, 1), (B, 1), (C, 1),
                   (D, 1))
    pool.acquire(A, "test_a")
    pool.release(A)
    pool.acquire(B, "test_b")
    pool.release(B)
    pool.acquire(C, "test_c")
    pool.release(C)
    pool.acquire(D, "test_d")
    pool.release(D)
    pool.close()
    assert sorted(pool.boots) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("cpus, available_kib, expected", [
    (2, 4 << 20, 1), (2, 8 << 20, 2), (4, 64 << 20, 4), (1, 64 << 20, 0), (2, 1 << 20, 0)])
def test_default_is_one_per_cpu_that_the_memory_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int, available_kib: int,
        expected: int) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 8000000 kB\nMemAvailable: {available_kib} kB\n")
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(cpus)))
    assert default_boot_ahead(1024, meminfo) == expected


@pytest.mark.parametrize("text", ["", "MemAvailable: lots\n", "MemTotal: 1 kB\n"])
def test_unreadable_meminfo_means_no_spare_guest(tmp_path: Path, text: str) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    assert spare_guests(1024, meminfo) == 0
    assert spare_guests(1024, tmp_path / "absent") == 0
