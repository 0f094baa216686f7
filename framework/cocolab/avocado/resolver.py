"""avocado's resolver for pytest references: one `cocolab-pytest` runnable per test item.

A reference is a test file (`tests/devmem/test_lockdown.py`), a node id
(`tests/devmem/test_lockdown.py::test_x[param]`) or a directory (avocado itself walks
directories and asks about each file in them). pytest collects it, in a process of its own with
the cocolab plugin, exactly as `pytest REFERENCE` would, PYTEST_ADDOPTS and COCOLAB_* included:
so `avocado list` shows the items pytest would run, tagged from their markers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from avocado.core.nrunner.runnable import Runnable
from avocado.core.plugin_interfaces import Resolver
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult

from cocolab.avocado.verdict import pytest_said

KIND = "cocolab-pytest"
TEST_FILES = ("test_*.py", "*_test.py")  # pytest's default python_files
COLLECT_TIMEOUT_S = 300.0


def claims(reference: str) -> bool:
    """Whether `reference` is one for pytest: a node id, a pytest test file or a directory."""
    path = reference.split("::", 1)[0]
    if "::" in reference:
        return path.endswith(".py")
    if os.path.isdir(path):
        return True
    return any(fnmatch.fnmatch(os.path.basename(path), p) for p in TEST_FILES)


def pytest_command(*args: str) -> list[str]:
    """pytest, run by the interpreter avocado runs under (where cocolab is installed), with the
    bridge plugin loaded, pytest's cache left alone (avocado jobs run side by side), and no
    xdist workers whatever PYTEST_ADDOPTS says: avocado runs the items side by side itself,
    and the bridge sees an item's reports only in the process that runs it."""
    return [sys.executable, "-m", "pytest", "-p", "cocolab.avocado.bridge",
            "-p", "no:cacheprovider", "-n0", *args]


def avocado_tags(tags: dict[str, list[str] | None]) -> dict[str, set[str] | None]:
    """The bridge's JSON tags as avocado holds them: a flat tag maps to None, a key to a set."""
    return {key: None if values is None else set(values) for key, values in tags.items()}


def runnables(collected: dict[str, object]) -> list[Runnable]:
    rootdir = str(collected["rootdir"])
    return [Runnable(KIND, item["nodeid"], rootdir=rootdir, tags=avocado_tags(item["tags"]))
            for item in collected["items"]]  # type: ignore[attr-defined]


class PytestResolver(Resolver):
    name = KIND
    description = "pytest test files and node ids, one runnable per item, markers as tags"

    def resolve(self, reference: str) -> ReferenceResolution:
        if not claims(reference):
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                       info="not a pytest test file, node id or directory")
        if not os.path.exists(reference.split("::", 1)[0]):
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                       info=f"{reference.split('::', 1)[0]}: no such file")
        path, sep, rest = reference.partition("::")
        target = Path(path).resolve()
        with tempfile.TemporaryDirectory(prefix="cocolab-avocado-") as tmp:
            out = Path(tmp) / "collected.json"
            try:
                # From the reference's own directory: pytest's rootdir (and so every name)
                # is then its config's directory or the reference's, never an ancestor it
                # shares with wherever avocado was started (a checkout under /tmp made the
                # names 'pytest-of-root/.../test_x.py::test_y').
                proc = subprocess.run(
                    pytest_command("--collect-only", "-q", "--cocolab-avocado-collect",
                                   str(out), f"{target}{sep}{rest}"),
                    cwd=target if target.is_dir() else target.parent,
                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                    timeout=COLLECT_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                return ReferenceResolution(
                    reference, ReferenceResolutionResult.ERROR,
                    info=f"pytest did not finish collecting in {COLLECT_TIMEOUT_S:.0f} s")
            if proc.returncode == 5 or (proc.returncode == 0 and not out.exists()):
                return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                           info="pytest collected no tests from it")
            if proc.returncode != 0 or not out.exists():
                return ReferenceResolution(
                    reference, ReferenceResolutionResult.ERROR,
                    info=f"pytest could not collect it (exit {proc.returncode}): "
                         f"{pytest_said(proc.stdout + proc.stderr)}")
            found = runnables(json.loads(out.read_text()))
        if not found:
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                       info="pytest collected no tests from it")
        return ReferenceResolution(reference, ReferenceResolutionResult.SUCCESS, found)
