"""The layer contracts of docs/DESIGN.md (pyproject.toml's [tool.importlinter]) hold, and
they can fail: the same contracts over a copy of the package with one import turned upward."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
        "lint_imports_command()", "--no-cache"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "framework")}
    return subprocess.run(LINT, cwd=root, env=env, text=True, capture_output=True,
                          check=False)


def test_the_package_keeps_its_layers() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_that_points_up_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "framework" / "cocolab", tmp_path / "framework" / "cocolab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    machine = tmp_path / "framework" / "cocolab" / "vm" / "machine.py"
    machine.write_text(machine.read_text().replace(
        "from cocolab.vm.boot import", "from cocolab.guest import Guest  # upward\n"
        "from cocolab.vm.boot import", 1))
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "cocolab.vm is not allowed to import cocolab.guest:" in result.stdout
    assert "- cocolab.vm.machine -> cocolab.guest (l." in result.stdout


def test_an_indirect_import_breaks_an_independence_contract(tmp_path: Path) -> None:
    """guest/ builds nothing, even through another module: guest/dmesg.py importing
    kconfig_tool, which reaches the rig, is refused by the contract as the chain it is (and by
    the layers, as an upward import)."""
    shutil.copytree(REPO / "framework" / "cocolab", tmp_path / "framework" / "cocolab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    helper = tmp_path / "framework" / "cocolab" / "guest" / "dmesg.py"
    helper.write_text(helper.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport cocolab.kconfig_tool  # a back door\n", 1))
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "cocolab.guest is not allowed to import cocolab.rig:" in result.stdout, \
        result.stdout[-3000:]
    assert "cocolab.guest.dmesg -> cocolab.kconfig_tool" in result.stdout


def test_no_two_test_modules_share_a_name() -> None:
    """pytest imports test modules, and the helpers beside them, by basename (tests/ has no
    packages): two test_x.py in two suites make `pytest tests/unit tests/smoke` an
    import-file-mismatch error, and two helper.py the wrong one imported."""
    names = [p.name for p in (REPO / "tests").rglob("*.py") if p.name != "conftest.py"]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_no_module_imports_a_conftest_by_name() -> None:
    """Every conftest.py is imported as `conftest`, so `from conftest import x` gets whichever
    one pytest loaded last (and ruff sorts it as first-party once tests/conftest.py exists):
    helpers that tests import live in a module of their own."""
    importers = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py")
                 if any(line.startswith(("from conftest ", "import conftest"))
                        for line in p.read_text().splitlines())]
    assert importers == []
