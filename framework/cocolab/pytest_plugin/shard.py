"""Split a run's tests into N shards that never split a VM's tests (`--shard I/N`).

A shard is a share of the selected tests that one host runs. Tests that share a VM (the same
request key) form one group and go to one shard, so every VM boots in exactly one shard; other
tests are groups of one. Groups go to shards by longest processing time first: heaviest group
to the lightest shard so far, ties to the earlier group and the lower shard, so every host that
computes the partition from the same selection and the same durations gets the same one.

A group's weight is its tests' recorded durations (setup, call and teardown: the first test's
setup holds the VM's boot), from `--durations-file`: an earlier run's cocolab-results.json
(or merged shards'), which every run writes anyway; where a test has none, an estimate:
BOOT_S for each group with a VM, TEST_S for each test. The file is only read, never updated
by the run: every shard must read the same one (commit it, or hand it to every runner), and
the partition's digest, shown in the header and kept in each shard's results, lets `cocolab
results merge` check that they did.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocolab.results import ResultsError, plain_nodeid
from cocolab.results.model import parse as parse_results

BOOT_S = 5.0
"""A VM's boot when no test of its group has a recorded duration: a TCG cold boot, about."""
TEST_S = 1.0
"""A test without a recorded duration."""

_SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class ShardSpec:
    index: int
    """1-based, as given."""
    count: int

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        m = _SHARD.fullmatch(text.strip())
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ValueError(f"--shard {text}: give I/N with 1 <= I <= N, such as 1/4")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Group:
    key: str
    """The VM request key, or the nodeid of a test that shares no VM."""
    nodeids: tuple[str, ...]
    boots: bool
    """Whether the group boots a VM (its first test's setup does)."""

    def weight(self, durations: Mapping[str, float]) -> float:
        known = [durations[n] for n in self.nodeids if n in durations]
        if len(known) == len(self.nodeids):
            return sum(known)
        missing = len(self.nodeids) - len(known)
        boot = BOOT_S if self.boots and self.nodeids[0] not in durations else 0.0
        return sum(known) + boot + missing * TEST_S


@dataclass(frozen=True)
class Partition:
    shards: tuple[tuple[Group, ...], ...]
    weights: tuple[float, ...]
    digest: str
    """Of the selection and the assignment: equal on every host that split alike."""


def group_tests(tests: Sequence[tuple[str, str | None]]) -> list[Group]:
    """(nodeid, VM request key or None) in run order -> groups, in order of first test."""
    members: dict[str, list[str]] = {}
    boots: dict[str, bool] = {}
    for nodeid, key in tests:
        group = key if key is not None else f"test:{nodeid}"
        members.setdefault(group, []).append(nodeid)
        boots[group] = key is not None
    return [Group(k, tuple(v), boots[k]) for k, v in members.items()]


def partition(groups: Sequence[Group], count: int,
              durations: Mapping[str, float]) -> Partition:
    """Longest processing time first over `count` shards; deterministic for equal inputs."""
    order = sorted(range(len(groups)), key=lambda i: (-groups[i].weight(durations), i))
    loads = [0.0] * count
    chosen: list[list[int]] = [[] for _ in range(count)]
    for i in order:
        shard = min(range(count), key=lambda s: (loads[s], s))
        loads[shard] += groups[i].weight(durations)
        chosen[shard].append(i)
    shards = tuple(tuple(groups[i] for i in sorted(members)) for members in chosen)
    digest = hashlib.sha256(json.dumps(
        [[list(g.nodeids) for g in shard] for shard in shards]).encode()).hexdigest()[:12]
    return Partition(shards, tuple(loads), digest)


def read_durations(path: Path | None) -> dict[str, float]:
    """Seconds per test from `path`: the cocolab-results.json of an earlier run (or of merged
    shards), or a JSON object of test ids to seconds; None: none recorded. Raises ValueError,
    one line, for a file that is neither."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"durations file {path}: {exc}") from None
    if isinstance(data, dict) and "format" in data:
        try:
            run = parse_results(data, str(path))
        except ResultsError as exc:
            raise ValueError(f"durations file {exc}") from None
        return {t.nodeid: t.duration for t in run.tests}
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            and v >= 0 for k, v in data.items()):
        raise ValueError(f"durations file {path}: neither a cocolab-results.json nor a JSON "
                         "object of test ids to seconds")
    return {k: float(v) for k, v in data.items()}


class ShardPlugin:
    """Registered by the plugin for `--shard I/N`: after every other deselection (-k, -m,
    --deselect), keeps this shard's tests and deselects the rest."""

    def __init__(self, spec: ShardSpec, durations: Path | None,
                 vm_key: Callable[[pytest.Item], str | None]):
        self.spec = spec
        self.durations_path = durations
        self.vm_key = vm_key
        self.selected = 0
        self.partition: Partition | None = None
        self.recorded = 0

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        try:
            durations = read_durations(self.durations_path)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        ids = {item: plain_nodeid(item.nodeid) for item in items}  # as -n and serial alike
        self.selected = len(items)
        self.recorded = sum(1 for item in items if ids[item] in durations)
        groups = group_tests([(ids[item], self.vm_key(item)) for item in items])
        self.partition = partition(groups, self.spec.count, durations)
        mine = {n for g in self.partition.shards[self.spec.index - 1] for n in g.nodeids}
        kept = [item for item in items if ids[item] in mine]
        dropped = [item for item in items if ids[item] not in mine]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    def header(self) -> str:
        p = self.partition
        if p is None:
            return f"cocolab shard {self.spec}: nothing collected"
        mine = p.shards[self.spec.index - 1]
        vms = sum(1 for g in mine if g.boots)
        weight = p.weights[self.spec.index - 1]
        return (f"cocolab shard {self.spec}: {sum(len(g.nodeids) for g in mine)} of "
                f"{self.selected} tests, {vms} VM(s), estimated {weight:.0f} of "
                f"{sum(p.weights):.0f} s; partition {p.digest} (durations: "
                f"{self.durations_path or 'none, estimated'}, {self.recorded} of "
                f"{self.selected} tests recorded)")
