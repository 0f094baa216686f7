"""The kernel's own selftests, one pytest item per case (cocolab/pytest_plugin/
kernel_tests.py): the targets are in targets.toml beside this file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.pytest_plugin.kernel_tests import collected, params, record_ktap_paths
from cocolab.pytest_plugin.keys import RIG

TARGETS = Path(__file__).with_name("targets.toml")


def pytest_collection(session: pytest.Session) -> None:
    """Named on the command line, this directory collects first of all: a kernel cocolab
    builds is then asked for the targets' options whichever suite resolves it first."""
    collected(session.config, TARGETS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "selftest" in metafunc.fixturenames:
        cases = collected(metafunc.config, TARGETS)
        metafunc.parametrize("selftest", params(metafunc.config.stash[RIG], cases))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    record_ktap_paths(items, "selftest")
