"""The kernel's own selftests as pytest items: every case of a harness program (and every
other program whole) is one parameter of one test function, so `-k`, `--shard`, baselines,
the results file, KCIDB and the matrix treat it as any other test, and it runs in the VM the
`vm` fixture gives: the lane, the topology, the CC proof, the kernel-warnings check.

Collected from a small TOML list (tests/kselftest/targets.toml): which targets, and how long
one case may run. Collecting builds the targets from the kernel's own tree
(kernel/selftests.py) and asks a kernel cocolab builds for what their `config` files need; a
prebuilt kernel without an option skips naming it, as every gate does.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet

from cocolab.errors import CocolabError, ConfigError, KernelTestDidNotReport
from cocolab.guest.kselftest import SelftestRun
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, parse_requirement
from cocolab.kernel.selftests import (
    Installed,
    NoSelftestSource,
    build,
    check_target,
    source_for,
    target_config,
)
from cocolab.pytest_plugin.keys import GATES_ONLY, RIG
from cocolab.pytest_plugin.markers import KTAP_PATH
from cocolab.results.ktap import KtapTest, Status, parse
from cocolab.rig import Rig

KTAP_NOTE = "cocolab.ktap"
"""The user property a directive that pytest has no word for (XFAIL, XPASS) is kept under."""
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Target:
    name: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    """How long one case (or one program run whole) may take in the guest."""
    leave_out: tuple[str, ...] = ()
    """Programs or cases ('PROGRAM' or 'PROGRAM/CASE') not collected; the TOML says why."""
    kconfig: tuple[str, ...] = ()
    """Options its tests assume beyond its `config` file (gates, and in a kernel cocolab
    builds); the TOML says why."""
    cmdline: tuple[str, ...] = ()
    """Kernel command-line words its guest boots with (hugepages=N)."""


def read_targets(path: Path) -> list[Target]:
    """`[target.NAME]` tables: `timeout` (seconds, default 300), `leave_out`, `kconfig` and
    `cmdline` (lists), and `why` (for the reader: required with any of those lists)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    targets = []
    for name, table in (data.get("target") or {}).items():
        unknown = set(table) - {"timeout", "leave_out", "kconfig", "cmdline", "why"}
        if unknown:
            raise ConfigError(f"{path}: [target.{name}]: unknown key(s) "
                              f"{', '.join(sorted(unknown))} (timeout, leave_out, kconfig, "
                              "cmdline, why)")
        lists = {key: table.get(key, []) for key in ("leave_out", "kconfig", "cmdline")}
        for key, value in lists.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [target.{name}] {key}: a list of strings")
        if any(lists.values()) and not table.get("why"):
            raise ConfigError(f"{path}: [target.{name}] sets "
                              f"{', '.join(k for k, v in lists.items() if v)}: say why "
                              "(why = \"...\")")
        bad = [o for o in lists["kconfig"] if parse_requirement(o) is None]
        if bad:
            raise ConfigError(f"{path}: [target.{name}] kconfig {bad}: each "
                              f"{REQUIREMENT_SYNTAX}")
        timeout = table.get("timeout", DEFAULT_TIMEOUT_S)
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 6 * 3600:
            raise ConfigError(f"{path}: [target.{name}] timeout {timeout!r}: seconds, above "
                              "0 and at most 6 hours")
        try:
            targets.append(Target(check_target(name), float(timeout),
                                  tuple(lists["leave_out"]), tuple(lists["kconfig"]),
                                  tuple(lists["cmdline"])))
        except CocolabError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return targets


@dataclass(frozen=True)
class SelftestCase:
    target: Target
    program: str = ""
    case: str | None = None
    """A harness case (run alone with `-r`), or None: the program runs whole."""
    install: Installed | None = None
    unavailable: str = ""
    """Why it cannot run here: its test skips saying so."""
    broken: str = ""
    """The selftests could not be built or listed: a rig failure (not the kernel's)."""
    wants: tuple[str, ...] = ()
    """What its target's `config` asks of the kernel: its gates."""

    @property
    def ident(self) -> str:
        parts = [self.target.name, self.program, self.case or ""]
        return "/".join(p for p in parts if p)

    @property
    def ktap_path(self) -> str:
        """KCIDB's path: kselftest.TARGET.PROGRAM[.CASE] (a case's own dots kept)."""
        parts = ["kselftest", self.target.name.replace("/", "."), self.program,
                 self.case or ""]
        return ".".join(p for p in parts if p)


_COLLECTED = pytest.StashKey[dict[Path, list["SelftestCase"]]]()


def collected(config: pytest.Config, targets_file: Path) -> list[SelftestCase]:
    """`collect` for the targets a file lists, once a run."""
    done = config.stash.setdefault(_COLLECTED, {})
    if targets_file not in done:
        try:
            targets = read_targets(targets_file)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        rig = config.stash[RIG]
        done[targets_file] = (gates(rig, targets) if config.stash.get(GATES_ONLY, False)
                              else collect(rig, targets))
    return done[targets_file]


def gates(rig: Rig, targets: list[Target]) -> list[SelftestCase]:
    """For `cocolab kconfig`: a target each, gated on its `config` as the kernel's tree has
    it, nothing built."""
    try:
        tree, _ = source_for(rig.kernel_spec)
    except CocolabError as exc:
        raise pytest.UsageError(f"the selftest targets' options are read from the kernel's "
                                f"tree: {exc}") from None
    return [SelftestCase(t, unavailable="collected for its gates",
                         wants=(*target_config(tree, t.name), *t.kconfig)) for t in targets]


def collect(rig: Rig, targets: list[Target]) -> list[SelftestCase]:
    """The cases the kernel's tree has for `targets`, built now; when there is no tree, or
    the build fails, one case per target that says so."""
    if not targets:
        return []
    try:
        tree, identity = source_for(rig.kernel_spec)
    except NoSelftestSource as exc:
        return [SelftestCase(t, unavailable=str(exc)) for t in targets]
    except CocolabError as exc:
        return [SelftestCase(t, broken=f"the kernel's source tree: {exc}") for t in targets]
    wants = {t.name: (*target_config(tree, t.name), *t.kconfig) for t in targets}
    for target in targets:
        rig.want_build_kconfig(list(wants[target.name]))
    try:
        installed = build(tree, identity, tuple(t.name for t in targets))
    except CocolabError as exc:
        return [SelftestCase(t, broken=str(exc)) for t in targets]
    by_name = {t.name: t for t in targets}
    cases = []
    for program in installed.programs:
        target = by_name[program.target]
        if program.name in target.leave_out:
            continue
        for case in program.cases or (None,):
            if case is None or f"{program.name}/{case}" not in target.leave_out:
                cases.append(SelftestCase(target, program.name, case, installed,
                                          wants=wants[target.name]))
    return cases


def params(rig: Rig, cases: list[SelftestCase]) -> list[ParameterSet]:
    """One pytest parameter a case, marked with what its target's `config` asks (the gate
    names each option the kernel lacks)."""
    out = []
    for case in cases:
        marks: list[Any] = []
        if case.wants:
            marks.append(pytest.mark.kconfig(*case.wants))
        if case.target.cmdline:
            marks.append(pytest.mark.cmdline(*case.target.cmdline))
        if case.target.timeout_s > 200:
            marks.append(pytest.mark.timeout(case.target.timeout_s + rig.options.boot_timeout
                                             + 120))
        out.append(pytest.param(case, id=case.ident, marks=marks))
    return out


def record_ktap_paths(items: list[pytest.Item], param: str) -> None:
    """Keep each kernel test's KTAP path (its parameter `param`'s `ktap_path`) as the item's
    user property, for the results file and KCIDB."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get(param) if callspec else None
        path = getattr(case, "ktap_path", None)
        if isinstance(path, str):
            item.user_properties.append((KTAP_PATH, path))


def outcome(case: SelftestCase, run: SelftestRun, item: pytest.Item) -> None:
    """End the test as the case's KTAP result says: a failure is an AssertionError (the
    kernel's: a baseline can name it), a skip or xfail pytest's own, a case that never
    reported (a hang, a crash) an error with the output's tail."""
    result = reported(case, run)
    if result.status is Status.PASSED:
        return
    if result.status in (Status.XFAILED, Status.XPASSED):
        # kselftest prints both on `ok` lines and counts neither a failure: pass, say which
        item.user_properties.append((KTAP_NOTE, f"{result.status.name[:5]} {result.reason}"))
        return
    if result.status is Status.SKIPPED:
        pytest.skip(f"{case.ident}: {result.reason or 'the selftest skipped'}")
    where = f"\n--- {run.command} (exit {run.returncode}), its last lines:\n{run.tail()}"
    if result.status is Status.FAILED:
        raise AssertionError(f"{case.ident}: not ok{': ' + result.reason if result.reason else ''}"
                             + where)
    raise KernelTestDidNotReport(f"{case.ident}: {result.reason or 'no result'}{where}")


def reported(case: SelftestCase, run: SelftestRun) -> KtapTest:
    """The one result a run reports for `case`: the harness's line for the case, or the
    runner's for a program run whole; an ERROR when it reported none."""
    if run.timed_out:
        return KtapTest(case.ident, 0, Status.ERROR,
                        f"did not report: killed after {case.target.timeout_s:g} s")
    tests = parse(run.output.splitlines(keepends=True))
    results = [t for t in tests if t.number]  # not the parser's own "no KTAP" entry
    if len(results) == 1:
        if case.case is not None and results[0].name != case.case \
                and results[0].status is not Status.ERROR:  # ERROR: the log ended first
            return KtapTest(case.ident, 0, Status.ERROR,
                            f"reported {results[0].name!r} where {case.case!r} was asked for")
        return results[0]
    if not results:
        why = tests[0].reason if tests else "no output"
        return KtapTest(case.ident, 0, Status.ERROR, f"did not report (exit {run.returncode}): "
                                                     f"{why}")
    return KtapTest(case.ident, 0, Status.ERROR,
                    f"reported {len(results)} results where one was asked for")
