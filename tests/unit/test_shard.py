"""--shard I/N: groups that never split, a deterministic balanced partition, and a durations
file read as one line when it is wrong."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cocolab.pytest_plugin.shard import (
    BOOT_S,
    TEST_S,
    Group,
    ShardSpec,
    group_tests,
    partition,
    read_durations,
)
from cocolab.results import RunResults, TestResult


def devmem_like(vms: int = 4, tests_per_vm: int = 10, plain: int = 6
                ) -> list[tuple[str, str | None]]:
    tests: list[tuple[str, str | None]] = []
    for v in range(vms):
        tests += [(f"t.py::test_{v}_{i}", f"vm{v}") for i in range(tests_per_vm)]
    tests += [(f"u.py::test_plain_{i}", None) for i in range(plain)]
    return tests


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_the_shards_hold_every_test_once_and_a_vm_in_one_shard(count: int) -> None:
    tests = devmem_like()
    parts = partition(group_tests(tests), count, {})
    seen = [n for shard in parts.shards for g in shard for n in g.nodeids]
    assert sorted(seen) == sorted(n for n, _ in tests)
    for key in {k for _, k in tests if k}:
        holding = [i for i, shard in enumerate(parts.shards) if any(g.key == key for g in shard)]
        assert len(holding) == 1, f"{key} split over shards {holding}"


def test_the_partition_is_the_same_whatever_the_run_and_its_digest_says_so() -> None:
    tests = devmem_like()
    durations = {n: 1.0 + (i % 3) for i, (n, _) in enumerate(tests)}
    first = partition(group_tests(tests), 3, durations)
    again = partition(group_tests(list(tests)), 3, dict(reversed(list(durations.items()))))
    assert first == again
    other = partition(group_tests(tests), 3, {**durations, tests[0][0]: 99.0})
    assert other.digest != first.digest


def test_recorded_durations_balance_the_shards() -> None:
    rng = random.Random(7)
    tests = devmem_like(vms=8, tests_per_vm=5, plain=20)
    durations = {n: rng.uniform(0.1, 8.0) for n, _ in tests}
    parts = partition(group_tests(tests), 2, durations)
    heaviest = max(g.weight(durations) for shard in parts.shards for g in shard)
    assert abs(parts.weights[0] - parts.weights[1]) <= heaviest
    assert sum(parts.weights) == pytest.approx(sum(durations.values()))


def test_without_durations_a_boot_and_each_test_are_estimated() -> None:
    group = Group("vm0", ("a", "b", "c"), boots=True)
    assert group.weight({}) == BOOT_S + 3 * TEST_S
    assert group.weight({"a": 7.0}) == 7.0 + 2 * TEST_S  # the first test's setup booted it
    assert group.weight({"b": 2.0}) == BOOT_S + 2.0 + 2 * TEST_S
    assert Group("test:x", ("x",), boots=False).weight({}) == TEST_S
    # two VMs of 4 tests and 8 plain tests: each shard gets one VM
    parts = partition(group_tests(devmem_like(vms=2, tests_per_vm=4, plain=8)), 2, {})
    assert [sum(g.boots for g in shard) for shard in parts.shards] == [1, 1]


def test_more_shards_than_groups_leaves_some_empty() -> None:
    parts = partition(group_tests([("a", "vm"), ("b", "vm")]), 3, {})
    assert [len(shard) for shard in parts.shards] == [1, 0, 0]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "1/0", "a/b", "1/2/3", ""])
def test_a_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--shard .*: give I/N with 1 <= I <= N"):
        ShardSpec.parse(text)


def test_a_shard_spec_round_trips() -> None:
    assert str(ShardSpec.parse(" 2/5 ")) == "2/5"


@pytest.mark.parametrize("content, says", [
    ("[1, 2]", "neither a cocolab-results.json nor"), ('{"a": "fast"}', "neither"),
    ('{"a": -1}', "neither"), ('{"a": true}', "neither"), ("{", "Expecting property name"),
    ('{"format": "cocolab-results/1", "facts": {}}', "facts: no 'lane'")])
def test_a_bad_durations_file_is_one_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "durations.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^durations file {path}: ") as info:
        read_durations(path)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_durations_come_from_an_earlier_runs_results_or_a_plain_mapping(
        tmp_path: Path) -> None:
    from test_results import FACTS  # the unit tests' sample facts

    results = tmp_path / "cocolab-results.json"
    RunResults(FACTS, [TestResult("a", "passed", 2.5), TestResult("b", "skipped", 0)]
               ).write(results)
    assert read_durations(results) == {"a": 2.5, "b": 0.0}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"a": 1, "b": 2.5}))
    assert read_durations(plain) == {"a": 1.0, "b": 2.5}
    assert read_durations(None) == {}
    with pytest.raises(ValueError, match="No such file"):
        read_durations(tmp_path / "absent.json")
