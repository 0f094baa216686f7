"""Every case of the KUnit suites in suites.toml, as KUnit ran it while the lane's guest
booted (built in: see cocolab/pytest_plugin/kunit.py). `pytest tests/kunit --kernel
build:debian:7.3` builds the kernel with the suites, lists their cases (one boot with
kunit.action=list, cached), and reads each case's result from the guest's kernel log."""

from __future__ import annotations

import pytest

from cocolab.errors import KernelError
from cocolab.guest import Guest
from cocolab.pytest_plugin.kunit import KunitCase, boot_results, outcome, result

pytestmark = pytest.mark.cmdline("log_buf_len=4M")
"""KUnit's results are read from the kernel log, which must still hold the boot: a log four
times the default, and so a VM of their own (a shared one's tests may flood and wrap the
log first: iommufd's selftests do)."""


@pytest.fixture
def runnable(kunit_case: KunitCase) -> KunitCase:
    """The case, if it can run here: decided before any boot."""
    if kunit_case.unavailable:
        pytest.skip(kunit_case.unavailable)
    if kunit_case.broken:  # a CocolabError in setup: a rig failure, not the kernel's
        raise KernelError(f"listing the kernel's KUnit cases: {kunit_case.broken}")
    return kunit_case


def test_kunit(runnable: KunitCase, vm: Guest) -> None:
    outcome(runnable, result(runnable, boot_results(vm)))
