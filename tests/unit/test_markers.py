from __future__ import annotations

from cocolab.kernel import Kconfig
from cocolab.kernel.kconfig import unmet as kconfig_unmet
from cocolab.pytest_plugin.markers import VMRequest

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
