"""Tests that cannot fail for the wrong reason: a precondition unmet is an ERROR (never a pass,
a skip, or the kernel's failure); a read the kernel refused by policy is told from one that
failed for another reason; the swiotlb count is 0 only where there is no swiotlb."""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import refused_by_policy, require
from cocolab.errors import PreconditionUnmet
from cocolab.guest.probe import ProbeResult
from cocolab.guest.swiotlb import NSLABS, USED, used_slots


class Shell:
    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers

    def run(self, command: str) -> object:
        rc, out = next((v for k, v in self.answers.items() if command.startswith(k)), (1, ""))
        return type("R", (), {"ok": rc == 0, "stdout": out, "__str__": lambda s: f"rc {rc}"})()


MOUNTED = {"grep -q ' /sys/kernel/debug debugfs '": (0, "")}


@pytest.mark.parametrize(("answers", "slots"), [
    ({**MOUNTED, f"test -e {NSLABS}": (0, ""), f"cat {USED}": (0, "256\n")}, 256),
    ({**MOUNTED, f"test -e {NSLABS}": (0, ""), f"cat {USED}": (0, "0\n")}, 0),
    ({**MOUNTED, f"test -e {NSLABS}": (1, "")}, 0),  # no pool (6.12: an empty swiotlb/)
])
def test_the_swiotlb_count(answers: dict[str, tuple[int, str]], slots: int) -> None:
    assert used_slots(Shell(answers)) == slots  # type: ignore[arg-type]


@pytest.mark.parametrize("answers", [
    {},  # debugfs not mounted: the old helper said "no swiotlb", so the plain test passed
    {**MOUNTED, f"test -e {NSLABS}": (0, ""), f"cat {USED}": (1, "")},
    {**MOUNTED, f"test -e {NSLABS}": (0, ""), f"cat {USED}": (0, "garbage")},
])
def test_a_count_that_cannot_be_read_is_a_precondition_never_zero(
        answers: dict[str, tuple[int, str]]) -> None:
    with pytest.raises(PreconditionUnmet):
        used_slots(Shell(answers))  # type: ignore[arg-type]


@pytest.mark.parametrize(("result", "refused"), [
    (ProbeResult("read", False, stage="read", errno=errno.EPERM), True),
    (ProbeResult("read", False, stage="open", errno=errno.EPERM), True),
    (ProbeResult("read", False, stage="open", errno=errno.ENOENT), False),
    (ProbeResult("read", False, stage="read", errno=errno.EIO), False),
    (ProbeResult("read", False), False),  # the helper did not answer with an errno
    (ProbeResult("read", True), False),
])
def test_only_eperm_is_a_refusal_by_policy(result: ProbeResult, refused: bool) -> None:
    assert refused_by_policy(result) is refused


def test_require() -> None:
    require(True, "fine")
    with pytest.raises(PreconditionUnmet, match=r"^no debugfs$"):
        require(False, "no debugfs")
