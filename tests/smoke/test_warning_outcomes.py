"""A kernel that warns during a test fails it (or, with --kernel-warnings=report, annotates it).

The rig's half is shown with a report injected through /dev/kmsg: the kernel prints it on the
console like its own, which is the path every real report takes. A real WARN_ON comes from
LKDTM, on kernels that have it.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INJECTED = """
    def test_injects_a_warning(vm):
        vm.run("echo '<4>WARNING: CPU: 0 PID: 1 at drivers/cocolab/injected.c:1 "
               "cocolab_injected+0x0/0x10' > /dev/kmsg", check=True)

    def test_stays_quiet(vm):
        vm.run("echo '<4>cocolab: an ordinary line' > /dev/kmsg", check=True)
"""


def test_a_warning_fails_the_test_that_caused_it_and_only_that_one(inner) -> None:
    result = inner(INJECTED)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*test_injects_a_warning*",
        "cocolab: the guest kernel warned during this test: WARN_ON: WARNING: CPU: 0 PID: 1 "
        "at drivers/cocolab/injected.c:1 cocolab_injected+0x0/0x10",
        "*] WARNING: CPU: 0 PID: 1 at drivers/cocolab/injected.c:1*"])


def test_kernel_warnings_report_passes_with_an_annotation(inner) -> None:
    result = inner(INJECTED, "--kernel-warnings=report")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([
        "*CocolabWarning: the guest kernel warned during this test: WARN_ON: WARNING: CPU: 0 "
        "PID: 1 at drivers/cocolab/injected.c:1*(--kernel-warnings=report)*"])


@pytest.mark.kconfig("LKDTM")
@pytest.mark.modules("lkdtm")
def test_a_real_warn_on_from_lkdtm_is_caught(vm, inner) -> None:
    result = inner("""
        import pytest
        @pytest.mark.modules("lkdtm")
        def test_provokes(vm):
            vm.run("echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT")
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the guest kernel warned during this test: WARN_ON: WARNING: "
                                 "CPU: * at drivers/misc/lkdtm/bugs.c:*"])
