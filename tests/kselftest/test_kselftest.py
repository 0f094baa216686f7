"""Every case of the selftest targets in targets.toml, in the lane's guest.

`pytest tests/kselftest --kernel build:debian:7.3` builds the targets from that tree, builds
the kernel with what their `config` files ask, and runs each harness case alone (`PROGRAM -r
CASE`) in a VM shared by all of them. Its KTAP result is the item's: ok passes, not ok fails
(an AssertionError: the kernel's, so a lane baseline can name it), SKIP skips with the
selftest's reason, and a case that never reported (a hang, a crash) errs with the output's
tail. A kernel warning printed during a case fails that case, as for every cocolab test.
"""

from __future__ import annotations

import pytest

from cocolab.guest import Guest
from cocolab.kernel.selftests import SelftestError
from cocolab.pytest_plugin.kernel_tests import SelftestCase, outcome


@pytest.fixture
def runnable(selftest: SelftestCase) -> SelftestCase:
    """The case, if it can run here: decided before any boot."""
    if selftest.unavailable:
        pytest.skip(selftest.unavailable)
    if selftest.broken:  # a CocolabError in setup: a rig failure, not the kernel's
        raise SelftestError(selftest.broken)
    return selftest


def test_kselftest(runnable: SelftestCase, vm: Guest, request: pytest.FixtureRequest) -> None:
    case = runnable
    assert case.install is not None
    where = vm.kselftest.install(case.install.digest, case.install.tarball)
    if case.case is not None:
        run = vm.kselftest.run_case(where, case.target.name, case.program, case.case,
                                    case.target.timeout_s)
    else:
        run = vm.kselftest.run_program(where, case.target.name, case.program,
                                       case.target.timeout_s)
    outcome(case, run, request.node)
