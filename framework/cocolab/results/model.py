"""The results file: its format, reading it back (every malformed input one line), and
joining the shards of one split run.

    {"format": "cocolab-results/1",
     "facts": {"lane": ..., "kernel": ..., "kernel_release": ..., ...},
     "tests": [{"nodeid": ..., "outcome": "passed", "duration": 1.2, ...}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocolab.errors import CocolabError

FORMAT = "cocolab-results/1"

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
"""pytest's words. A rig failure is an error (never failed); a baseline is an xfailed (or,
strict, a failed xpass)."""


_XDIST_GROUP = re.compile(r"@vm-[0-9a-f]+$")


def plain_nodeid(nodeid: str) -> str:
    """A test's id without the `@vm-KEY` suffix xdist's loadgroup adds (the plugin groups a
    VM's tests so): results and durations from `-n` runs and serial runs must agree."""
    return _XDIST_GROUP.sub("", nodeid)


class ResultsError(CocolabError):
    """A results file that cannot be read, or shards that do not make one run."""


@dataclass(frozen=True)
class RunFacts:
    """What tells one run's column from another's: the same for every shard of a run but
    `shard` and `started`."""

    lane: str
    kernel: str
    """As asked: debian:trixie, a path, build:..."""
    kernel_release: str
    kernel_config_sha256: str
    qemu: str
    accel: str
    cc: str
    """"none", or the confidential guest the lane boots (simulated ones say so)."""
    host_cpu: str
    started: str
    """ISO 8601, UTC."""
    selected: int
    """Tests in the whole selection (every shard's, for a split run)."""
    shard: str | None = None
    """"I/N" for one shard of a split run; None for a whole run (or a merged one)."""
    partition: str | None = None
    """The split's digest (pytest_plugin/shard.py): equal in every shard of one split."""
    patches: tuple[str, ...] = ()
    """The patches the kernel was built with, in order, each "SHA256 PATH"."""
    simulated: bool = False
    """The lane's confidential guest is simulated (cc-sim), not hardware."""

    def column(self) -> str:
        """How a report names this run's column."""
        return f"{self.kernel_release} on {self.lane}"


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    duration: float
    """Seconds: setup, call and teardown."""
    reason: str = ""
    """Why it skipped, xfailed or failed: one line."""
    rig_failure: bool = False
    """The VM misbehaved (cocolab's or QEMU's side), not a kernel assertion."""
    baseline: str | None = None
    """The lane's known-issue baseline this test is under, if any."""
    bundle: str | None = None
    """Its failure bundle (console log, relaunch.sh), if it failed with a VM."""
    finding: str | None = None
    """The class of the known weakness it shows (memory-safety, info-leak, dos), if any."""
    ktap_path: str | None = None
    """A kernel test's own path (kselftest.TARGET.PROGRAM.CASE, kunit.SUITE.CASE): its
    name wherever the kernel's tests are reported (KCIDB's test path)."""


@dataclass
class RunResults:
    facts: RunFacts
    tests: list[TestResult] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    """The shards merged into this one ("1/2", "2/2"), empty for a run never split."""

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "facts": dataclasses.asdict(self.facts),
                "shards": self.shards, "tests": [dataclasses.asdict(t) for t in self.tests]}

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)

    def verdicts(self) -> dict[str, str]:
        return {t.nodeid: t.outcome for t in self.tests}


def _fields(cls: type, data: object, what: str) -> dict[str, Any]:
    """`data` as the keyword arguments of dataclass `cls`: every required field present,
    no unknown one, each of its declared type."""
    if not isinstance(data, dict):
        raise ResultsError(f"{what}: not a JSON object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ResultsError(f"{what}: unknown field {unknown[0]!r}")
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise ResultsError(f"{what}: no {name!r}")
            continue
        value, kind = data[name], str(f.type)
        ok = (value is None and "None" in kind) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
            if kind.startswith("tuple") else
            isinstance(value, bool) if kind.startswith("bool") else
            isinstance(value, int) and not isinstance(value, bool) if kind.startswith("int") else
            isinstance(value, int | float) and not isinstance(value, bool)
            if kind.startswith("float") else isinstance(value, str))
        if not ok:
            raise ResultsError(f"{what}: {name!r} is {value!r}, not a {kind}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def parse(data: object, source: str) -> RunResults:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{source}: not a cocolab results file (format {found!r}, "
                           f"expected {FORMAT!r})")
    facts = RunFacts(**_fields(RunFacts, data.get("facts"), f"{source}: facts"))
    tests_data = data.get("tests")
    if not isinstance(tests_data, list):
        raise ResultsError(f"{source}: 'tests' is not a list")
    tests = []
    for i, entry in enumerate(tests_data):
        test = TestResult(**_fields(TestResult, entry, f"{source}: tests[{i}]"))
        if test.outcome not in OUTCOMES:
            raise ResultsError(f"{source}: tests[{i}] ({test.nodeid}): outcome "
                               f"{test.outcome!r} is not one of {', '.join(OUTCOMES)}")
        tests.append(test)
    shards = data.get("shards", [])
    if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
        raise ResultsError(f"{source}: 'shards' is not a list of I/N")
    for shard in [*shards, *([facts.shard] if facts.shard is not None else [])]:
        if not _is_shard(shard):
            raise ResultsError(f"{source}: shard {shard[:40]!r} is not I/N (1 <= I <= N)")
    return RunResults(facts, tests, shards)


_SHARD = re.compile(r"([1-9][0-9]{0,5})/([1-9][0-9]{0,5})")


def _is_shard(text: str) -> bool:
    found = _SHARD.fullmatch(text)
    return found is not None and int(found.group(1)) <= int(found.group(2))


def load(path: Path) -> RunResults:
    """A results file, or the one in a results directory."""
    if path.is_dir():
        path = path / "cocolab-results.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file (a pytest run with cocolab writes "
                           "RESULTS/cocolab-results.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: {exc}") from None
    return parse(data, str(path))


_PER_SHARD = ("shard", "started")


def merge(runs: Sequence[RunResults], sources: Sequence[str] | None = None) -> RunResults:
    """The shards of one split run as one run: they must share their facts (but shard and
    start time) and their partition, be distinct, be all N, and hold each test once."""
    names = list(sources) if sources is not None else [f"#{i + 1}" for i in range(len(runs))]
    if not runs:
        raise ResultsError("nothing to merge")
    first = runs[0].facts
    same = {k: v for k, v in dataclasses.asdict(first).items() if k not in _PER_SHARD}
    for run, name in zip(runs[1:], names[1:], strict=True):
        other = dataclasses.asdict(run.facts)
        for key, value in same.items():
            if other[key] != value:
                raise ResultsError(f"{name} is not a shard of {names[0]}'s run: {key} is "
                                   f"{other[key]!r} there, {value!r} here")
    shards: list[str] = []
    for run, name in zip(runs, names, strict=True):
        got = run.shards or ([run.facts.shard] if run.facts.shard else [])
        if not got:
            raise ResultsError(f"{name}: a whole run, not a shard; merge joins the shards of "
                               "one `--shard I/N` run")
        repeated = sorted(set(got) & set(shards))
        if repeated:
            raise ResultsError(f"{name}: shard {repeated[0]} is given twice")
        shards += got
    count = int(shards[0].split("/")[1])
    wanted = {f"{i}/{count}" for i in range(1, count + 1)}
    if set(shards) != wanted:
        missing = sorted(wanted - set(shards)) or sorted(set(shards) - wanted)
        raise ResultsError(f"the shards do not make the whole run: {', '.join(missing)} "
                           f"{'missing' if wanted - set(shards) else 'not of ' + str(count)}")
    seen: dict[str, str] = {}
    tests: list[TestResult] = []
    for run, name in zip(runs, names, strict=True):
        for test in run.tests:
            if test.nodeid in seen:
                raise ResultsError(f"{test.nodeid} ran in two shards ({seen[test.nodeid]} and "
                                   f"{name}): they did not split alike")
            seen[test.nodeid] = name
            tests.append(test)
    if len(tests) != first.selected:
        raise ResultsError(f"the shards hold {len(tests)} tests, the run selected "
                           f"{first.selected}: a shard stopped early (-x) or is missing tests")
    facts = dataclasses.replace(first, shard=None,
                                started=min(r.facts.started for r in runs))
    return RunResults(facts, tests, sorted(shards, key=lambda s: int(s.split("/")[0])))
