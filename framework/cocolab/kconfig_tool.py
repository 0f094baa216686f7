"""`cocolab kconfig`: what a kernel needs for the suites, as a config fragment, and whether a
.config or a tree has it.

The fragment is the rig's own needs (kernel/needs.py) and every option the suites gate their
tests on, collected by pytest itself (GateCollector), each naming the tests it unlocks.
`--check CONFIG` says what a .config lacks and which tests that skips; `--apply TREE` merges the
fragment into a kernel source tree's .config with the kernel's own tools, then says what
Kconfig would not set. A tool beside cli.py: it runs pytest and make, which no layer below
the plugin may.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cocolab.errors import ConfigError, KernelError
from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.needs import RIG_NEEDS, rig_lacks


@dataclass
class Gate:
    """One option the tests gate on: which tests, and what they want of it."""

    option: str
    wanted: str | None
    """'y', 'm', 'n', or None for 'y or m'."""
    tests: list[str] = field(default_factory=list)

    def line(self) -> str:
        name = "CONFIG_" + self.option
        if self.wanted == "n":
            return f"# {name} is not set"
        return f"{name}={self.wanted or 'y'}"

    def met_by(self, kconfig: Kconfig) -> bool:
        value = kconfig.get("CONFIG_" + self.option)
        return {None: value in ("y", "m"), "n": value is None}.get(self.wanted,
                                                                  value == self.wanted)


def _tests(nodeids: list[str], most: int = 3) -> str:
    """'5 tests: test_a, test_b, test_c (+1 more)': functions, without file or parameters."""
    names = list(dict.fromkeys(n.split("::")[-1].split("[")[0] for n in nodeids))
    shown = ", ".join(names[:most]) + (f" (+{len(names) - most} more)" if len(names) > most
                                       else "")
    return f"{len(nodeids)} test{'s' if len(nodeids) != 1 else ''}: {shown}"


def fragment(gates: list[Gate], why: bool = True) -> str:
    """The config fragment: the rig's needs, then every gate with the tests it unlocks (each
    as a trailing comment; `why=False` leaves them out, for Kconfig's own tools)."""
    width = 34
    lines = ["# cocolab: what the rig needs to boot its guest and talk to it"]
    for need in RIG_NEEDS:
        lines.append(f"{'CONFIG_' + need.option + '=y':<{width}} # {need.why}"
                     + (" (=m will do)" if need.modular else ""))
    lines.append("# cocolab: what the chosen suites' tests gate on")
    for gate in sorted(gates, key=lambda g: g.option):
        lines.append(f"{gate.line():<{width}} # {_tests(gate.tests)}")
    if not why:
        lines = [line.split(" # ")[0].rstrip() for line in lines
                 if not line.startswith("# cocolab:")]
    return "\n".join(lines) + "\n"


def check(kconfig: Kconfig, gates: list[Gate]) -> tuple[list[str], int]:
    """(what the config lacks, one line each, and the number of tests that will skip)."""
    lines = [f"the rig needs CONFIG_{need.option}={'y or m' if need.modular else 'y'}, has "
             f"{kconfig.describe('CONFIG_' + need.option)}: {need.why}"
             for need in rig_lacks(kconfig)]
    skipping: set[str] = set()
    for gate in sorted(gates, key=lambda g: g.option):
        if not gate.met_by(kconfig):
            have = kconfig.describe("CONFIG_" + gate.option)
            lines.append(f"wants {gate.line()}, has {have}: skips {_tests(gate.tests)}")
            skipping.update(gate.tests)
    return lines, len(skipping)


class GateCollector:
    """A pytest plugin that, at collection, gathers every test's kconfig marker and what the
    machine each VM test boots needs of the kernel (its vIOMMU's driver, CC guest support)."""

    def __init__(self) -> None:
        self.gates: dict[tuple[str, str | None], Gate] = {}

    def pytest_configure(self, config: pytest.Config) -> None:
        from cocolab.pytest_plugin.keys import GATES_ONLY
        config.stash[GATES_ONLY] = True

    @pytest.hookimpl(trylast=True)  # after cocolab's own hook has stashed each VM request
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        from cocolab.pytest_plugin.keys import ITEM_REQUEST, RIG
        from cocolab.pytest_plugin.markers import kconfig_requirements, vm_request
        for item in items:
            reqs = kconfig_requirements(item)
            request = item.stash.get(ITEM_REQUEST, None)
            if request is None and (item.get_closest_marker("machine")
                                    or item.get_closest_marker("topology")):
                request = vm_request(item)  # a fixture asks for `vm` by getfixturevalue
            if request is not None:
                machine, _, _ = item.config.stash[RIG].layout(request.machine,
                                                              request.topology)
                reqs += machine.kconfig
            for option, wanted in dict.fromkeys(reqs):
                name = option.removeprefix("CONFIG_")
                gate = self.gates.setdefault((name, wanted), Gate(name, wanted))
                gate.tests.append(item.nodeid)


def collect_gates(args: list[str]) -> list[Gate]:
    """The kconfig gates of the tests under the paths in `args` (and the options there), as
    pytest itself collects them."""
    import contextlib
    import io

    collector = GateCollector()
    with contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args],
                             plugins=[collector])
    if status == pytest.ExitCode.USAGE_ERROR:  # pytest's "ERROR: ..." names what is wrong
        said = [line.removeprefix("ERROR: ") for line in err.getvalue().splitlines()
                if line.startswith("ERROR: ")]
        raise ConfigError("; ".join(said) or err.getvalue().strip()[-1000:])
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise RuntimeError(f"collecting {' '.join(args)} failed ({status}):\n"
                           f"{out.getvalue()[-2000:]}")
    return list(collector.gates.values())


MERGE_CONFIG = "scripts/kconfig/merge_config.sh"


def check_tree(tree: Path) -> None:
    """A kernel source tree, or the usage error that says it is not one."""
    if not (tree / MERGE_CONFIG).is_file() or not (tree / "Makefile").is_file():
        raise ConfigError(f"kconfig --apply {tree}: not a kernel source tree (no {MERGE_CONFIG})")


def apply(tree: Path, text: str) -> Kconfig:
    """Merge the fragment `text` into TREE/.config (from `make defconfig` when there is none)
    with the kernel's own scripts/kconfig/merge_config.sh, let `make olddefconfig` settle the
    dependencies, and return the config that results. Their output goes to stderr."""
    check_tree(tree)
    fragment = tree / ".cocolab.fragment"
    fragment.write_text(text)
    steps = [] if (tree / ".config").exists() else [["make", "defconfig"]]
    steps += [["sh", MERGE_CONFIG, "-m", ".config", fragment.name], ["make", "olddefconfig"]]
    try:
        for argv in steps:
            print(f"kconfig --apply: {' '.join(argv)}", file=sys.stderr)
            done = subprocess.run(argv, cwd=tree, stdin=subprocess.DEVNULL, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  check=False)
            sys.stderr.write(done.stdout)
            if done.returncode != 0:
                raise KernelError(f"kconfig --apply {tree}: {' '.join(argv)} exited "
                                  f"{done.returncode}")
    finally:
        fragment.unlink(missing_ok=True)
    return Kconfig.from_file(tree / ".config")
