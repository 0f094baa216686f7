from __future__ import annotations

import pytest

from cocolab.kernel import Kconfig
from cocolab.kernel.kconfig import unmet as kconfig_unmet
from cocolab.pytest_plugin.markers import VMRequest, allowed_kernel_reports

K = Kconfig.parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n")


def test_kconfig_requirements() -> None:
    assert kconfig_unmet(K, [("CONFIG_A", None), ("CONFIG_B", None)]) == []
    assert kconfig_unmet(K, [("CONFIG_A", "y"), ("CONFIG_B", "m"), ("CONFIG_C", "n")]) == []
    assert kconfig_unmet(K, [("CONFIG_C", None)]) == [
        "needs CONFIG_C=y or =m, kernel has CONFIG_C is not set"]
    assert kconfig_unmet(K, [("CONFIG_B", "y")]) == ["needs CONFIG_B=y, kernel has CONFIG_B=m"]
    assert kconfig_unmet(K, [("CONFIG_A", "n")]) == [
        "needs CONFIG_A not set, kernel has CONFIG_A=y"]


def test_requests_share_a_key_only_when_equal() -> None:
    a = VMRequest(cmdline=("lockdown=integrity",))
    assert a.key() == VMRequest(cmdline=("lockdown=integrity",)).key()
    assert a.key() != VMRequest(cmdline=("lockdown=confidentiality",)).key()
    assert a.key() != VMRequest(qemu_args=("lockdown=integrity",)).key()
    assert VMRequest().describe() == "default VM"


class Item:
    """What allowed_kernel_reports reads of a pytest item."""

    nodeid = "tests/x.py::test_x"

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.marks = [m.mark for m in marks]

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m for m in self.marks if m.name == name), None)


def test_only_denial_of_service_reports_can_be_allowed_and_with_a_reason() -> None:
    ok = Item(pytest.mark.allow_kernel_reports("hung task", "soft lockup", reason="a dos"))
    assert allowed_kernel_reports(ok) == {"hung task", "soft lockup"}  # type: ignore[arg-type]
    assert allowed_kernel_reports(Item()) == frozenset()  # type: ignore[arg-type]
    for bad in (pytest.mark.allow_kernel_reports("KASAN", reason="never"),
                pytest.mark.allow_kernel_reports("WARN_ON", "hung task", reason="never"),
                pytest.mark.allow_kernel_reports("hung task"),
                pytest.mark.allow_kernel_reports(reason="nothing named")):
        with pytest.raises(pytest.UsageError, match="memory-safety report is never allowed"):
            allowed_kernel_reports(Item(bad))  # type: ignore[arg-type]
