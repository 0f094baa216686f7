"""KUnit's cases as pytest items (cocolab/pytest_plugin/kunit.py): the suites are in
suites.toml beside this file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.pytest_plugin.kernel_tests import record_ktap_paths
from cocolab.pytest_plugin.keys import RIG
from cocolab.pytest_plugin.kunit import collect, suites

SUITES = Path(__file__).with_name("suites.toml")


def pytest_collection(session: pytest.Session) -> None:
    """Named on the command line, this directory asks for its options before any suite
    collects (the cases are listed from the kernel, which is then built)."""
    session.config.stash[RIG].want_build_kconfig(list(suites(SUITES)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kunit_case" in metafunc.fixturenames:
        cases = collect(metafunc.config, suites(SUITES))
        metafunc.parametrize("kunit_case", [
            pytest.param(c, id=c.ident, marks=[pytest.mark.kconfig(*c.wants)]) for c in cases])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    record_ktap_paths(items, "kunit_case")
