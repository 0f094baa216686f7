"""Assertion helpers for kernel tests. Each says what the kernel did and what was expected."""

from __future__ import annotations

import errno as errno_mod
import time
from collections.abc import Callable
from typing import TypeVar

from cocolab.deadline import Deadline
from cocolab.errors import PreconditionUnmet
from cocolab.guest.dmesg import DmesgLines
from cocolab.guest.probe import ProbeResult

T = TypeVar("T")


def eventually(check: Callable[[], T], seconds: float = 10.0, interval: float = 0.2) -> T:
    """Call `check` (which asserts) until it passes or `seconds` run out; then its last
    AssertionError stands. For kernel state that settles asynchronously (a hub event, a
    deferred probe): polling against a deadline instead of a fixed sleep."""
    __tracebackhide__ = True
    deadline = Deadline(seconds)
    while True:
        try:
            return check()
        except AssertionError:
            if deadline.expired():
                raise
        time.sleep(min(interval, deadline.remaining()))


def require(condition: object, why: str) -> None:
    """A precondition of the test, checked before its own assertion: unmet, the test is an
    ERROR saying `why` (PreconditionUnmet), not a failure the kernel would be blamed for."""
    __tracebackhide__ = True
    if not condition:
        raise PreconditionUnmet(why)


def refused_by_policy(result: ProbeResult) -> bool:
    """The kernel refused the access as a policy does (EPERM, at any stage): a missing file,
    EIO or a helper that did not run is no refusal."""
    return not result.ok and result.errno == errno_mod.EPERM


def _name(number: int) -> str:
    return errno_mod.errorcode.get(number, str(number))


def assert_denied(result: ProbeResult, expected_errno: int, stage: str | None = None) -> None:
    """The kernel refused with `expected_errno` (at `stage`: open, read, mmap, ...)."""
    __tracebackhide__ = True
    if result.ok:
        raise AssertionError(f"expected {_name(expected_errno)}, the kernel allowed it: {result}")
    if result.signal:
        raise AssertionError(f"expected {_name(expected_errno)}, got {result.signal}: {result}")
    if result.errno != expected_errno:
        raise AssertionError(f"expected {_name(expected_errno)}, got {result.errname}: {result}")
    if stage is not None and result.stage != stage:
        raise AssertionError(f"expected {_name(expected_errno)} from {stage}(), it came from "
                             f"{result.stage}(): {result}")


def assert_allowed(result: ProbeResult) -> None:
    __tracebackhide__ = True
    if not result.ok:
        raise AssertionError(f"expected the kernel to allow it: {result}")


def _assert_full_transfer(result: ProbeResult) -> None:
    __tracebackhide__ = True
    assert_allowed(result)
    if result.count != result.length:
        raise AssertionError(f"short transfer: {result}")


def assert_zero_filled(result: ProbeResult) -> None:
    """Allowed, full length, and every byte zero (STRICT_DEVMEM's low-RAM 'show zeros')."""
    __tracebackhide__ = True
    _assert_full_transfer(result)
    if result.nonzero:
        raise AssertionError(f"expected all zero bytes, {result.nonzero} are not: {result}")


def assert_real_data(result: ProbeResult) -> None:
    """Allowed, full length, and not all zeros: real memory contents came back."""
    __tracebackhide__ = True
    _assert_full_transfer(result)
    if not result.nonzero:
        raise AssertionError(f"expected real (non-zero) contents, all bytes are zero: {result}")


def assert_faults(result: ProbeResult, signal: str) -> None:
    __tracebackhide__ = True
    if result.signal != signal:
        raise AssertionError(f"expected the access to raise {signal}: {result}")


def assert_logged(lines: DmesgLines, text: str) -> None:
    """`text` is in the kernel log lines."""
    __tracebackhide__ = True
    if not lines.contains(text):
        raise AssertionError(f"expected the kernel to log {text!r}; it logged:\n{lines}")


def assert_not_logged(lines: DmesgLines, text: str) -> None:
    __tracebackhide__ = True
    if lines.contains(text):
        found = "\n".join(line for line in lines.lines if text in line)
        raise AssertionError(f"expected no {text!r} in the kernel log, found:\n{found}")
