"""KUnit suites built into the kernel, run at boot, each case a pytest item.

The suites are kernel options (tests/kunit/suites.toml): a kernel cocolab builds gets them
built in (with KUNIT), and KUnit runs them while the guest boots, before userspace, printing
KTAP on the kernel log. Built in rather than loaded as modules: a case then runs before any
test touched the guest, in every VM of the kernel, snapshots included (the log is in the
guest's memory), and the suites that cannot be modules (most of lib/ and kernel/) run too.

Collecting needs the kernel's list of cases, which only the kernel has: it is built now,
and booted once with `kunit.action=list` and a one-program initramfs (KUnit prints
SUITE.CASE lines and runs nothing); the list is cached by image. Each item then reads its
case's result from the guest's kernel log (parsed once per guest): ok passes, not ok is the
kernel's failure, SKIP skips with KUnit's reason, a case the log never reported (a crash, a
hang that ended the boot) is an error. A kernel warning among a case's own lines fails it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from cocolab.errors import (
    CocolabError,
    ConfigError,
    KernelTestDidNotReport,
    PreconditionUnmet,
)
from cocolab.guest import Guest
from cocolab.guest.kernel_warnings import kernel_warnings
from cocolab.kernel.kconfig import parse_requirement, unmet
from cocolab.paths import cache_dir, write_atomic
from cocolab.pytest_plugin.keys import GATES_ONLY, RIG
from cocolab.results.ktap import KtapTest, Status, parse
from cocolab.rig import Rig

LIST_CMDLINE = ("kunit.action=list",)
_LIST_DEADLINE_S = 180.0
_PREFIX = re.compile(r"^(?:\[[^\]]*\])+ ?")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def suites(path: Path) -> tuple[str, ...]:
    """`read_suites` for a conftest: a bad file is a usage error naming it."""
    try:
        return read_suites(path)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def read_suites(path: Path) -> tuple[str, ...]:
    """`options = [...]`: the suites' kernel options (NAME or NAME=y), KUNIT=y first."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - {"options"}
    options = data.get("options", [])
    if unknown or not isinstance(options, list) or not all(
            isinstance(o, str) and parse_requirement(o) for o in options):
        raise ConfigError(f"{path}: one key, options = [\"NAME\" or \"NAME=y\", ...]")
    return ("KUNIT=y", *(o for o in options if o != "KUNIT=y"))


@dataclass(frozen=True)
class KunitCase:
    suite: str
    case: str = ""
    unavailable: str = ""
    broken: str = ""
    wants: tuple[str, ...] = ()
    """The suites' options: its gates."""

    @property
    def ident(self) -> str:
        return f"{self.suite}/{self.case}" if self.case else self.suite

    @property
    def ktap_path(self) -> str:
        return ".".join(p for p in ("kunit", self.suite, self.case) if p)


def parse_list(console: str) -> list[tuple[str, str]]:
    """(suite, case) from a `kunit.action=list` boot's console (kunit_exec_list_tests():
    after a KTAP header, each suite's name on a line, then SUITE.CASE a line), other
    kernel messages interleaved and ignored."""
    cases: list[tuple[str, str]] = []
    suite, started = "", False
    for raw in console.splitlines():
        line = _PREFIX.sub("", raw.rstrip("\r"), count=1).strip()
        if line == "KTAP version 1":
            started = True
            continue
        if not started or not _NAME.match(line):
            continue
        if suite and line.startswith(suite + ".") and len(line) > len(suite) + 1:
            cases.append((suite, line[len(suite) + 1:]))
        elif "." not in line:
            suite = line
    return cases


def collect(config: pytest.Config, options: tuple[str, ...]) -> list[KunitCase]:
    """The cases the kernel lists, each gated on `options`. A kernel cocolab builds is built
    now with them; one that lacks them gives one skipped item naming them; a failed build or
    listing boot, one item that is a rig failure. For `cocolab kconfig`, one item with the
    gates, nothing built or booted."""
    if config.stash.get(GATES_ONLY, False):
        return [KunitCase("kunit", unavailable="collected for its gates", wants=options)]
    cases = _listed(config.stash[RIG], options)
    return [dataclasses.replace(c, wants=options) for c in cases]


def _listed(rig: Rig, options: tuple[str, ...]) -> list[KunitCase]:
    rig.want_build_kconfig(list(options))
    try:
        kernel = rig.kernel
    except CocolabError as exc:
        return [KunitCase("kunit", broken=str(exc))]
    reqs = [req for o in options if (req := parse_requirement(o)) is not None]
    lacking = unmet(kernel.kconfig, reqs)
    if lacking:
        return [KunitCase("kunit", unavailable=(
            f"kernel {kernel.release} ({rig.kernel_spec}): " + "; ".join(lacking)
            + ". Pass --kernel build:debian:X.Y (cocolab builds the suites in) or a kernel "
              "with them built in"))]
    try:
        listed = _listing(rig, kernel.image)
    except CocolabError as exc:
        return [KunitCase("kunit", broken=str(exc))]
    if not listed:
        return [KunitCase("kunit", broken=f"kernel {kernel.release} listed no KUnit case "
                                          f"when booted with {' '.join(LIST_CMDLINE)}")]
    return [KunitCase(suite, case) for suite, case in listed]


def _listing(rig: Rig, image: Path) -> list[tuple[str, str]]:
    digest = hashlib.sha256(image.read_bytes()).hexdigest()[:16]
    path = cache_dir("kunit-lists") / f"{digest}.json"
    with FileLock(str(path) + ".lock"):  # xdist workers collect alike: one boot
        if path.exists():
            return [(s, c) for s, c in json.loads(path.read_text())]
        listed = parse_list(rig.boot_console(LIST_CMDLINE, _LIST_DEADLINE_S))
        write_atomic(path, json.dumps(listed))
    return listed


_LOGS: weakref.WeakKeyDictionary[Guest, list[KtapTest]] = weakref.WeakKeyDictionary()


def boot_results(vm: Guest) -> list[KtapTest]:
    """The KTAP KUnit printed while `vm` booted, from its kernel log (read once a guest)."""
    if vm not in _LOGS:
        log = vm.run("dmesg", check=True).stdout
        if "Linux version" not in log.lstrip().split("\n", 1)[0]:  # the boot's first line
            raise PreconditionUnmet("the guest's kernel log no longer begins at boot (it "
                                    "wrapped): KUnit's results are gone; boot the KUnit "
                                    "tests a VM of their own with a larger log_buf_len")
        _LOGS[vm] = parse(log.splitlines())
    return _LOGS[vm]


def result(case: KunitCase, tests: list[KtapTest]) -> KtapTest:
    suite = next((t for t in tests if t.name == case.suite), None)
    if suite is None:
        return KtapTest(case.ident, 0, Status.ERROR,
                        f"suite {case.suite} did not report in the guest's kernel log")
    found = next((t for t in suite.subtests if t.name == case.case), None)
    if found is None:
        why = suite.reason if suite.status is not Status.PASSED else ""
        return KtapTest(case.ident, 0, Status.ERROR, f"did not report (suite {case.suite}: "
                        f"{suite.status.value}{', ' + why if why else ''})")
    return found


def outcome(case: KunitCase, found: KtapTest) -> None:
    """End the test as KUnit's result for the case says (see the module's docstring)."""
    warned = kernel_warnings("\n".join(_PREFIX.sub("", line) for line in found.log))
    if warned:
        raise AssertionError(f"{case.ident}: the kernel warned during the case: "
                             + "; ".join(str(w) for w in warned) + "\n" + warned[0].report)
    if found.status in (Status.PASSED, Status.XFAILED, Status.XPASSED):
        return
    if found.status is Status.SKIPPED:
        pytest.skip(f"{case.ident}: {found.reason or 'KUnit skipped it'}")
    log = "\n".join(found.log[-30:])
    if found.status is Status.FAILED:
        raise AssertionError(f"{case.ident}: not ok{': ' + found.reason if found.reason else ''}"
                             f"\n{log}")
    raise KernelTestDidNotReport(f"{case.ident}: {found.reason or 'no result'}\n{log}")
