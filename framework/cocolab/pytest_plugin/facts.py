"""What a run says of itself: the results file's facts, the report header, the JUnit
properties, the terminal summary; and what xdist workers tell the controller of them."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cocolab.errors import (
    CocolabError,
)
from cocolab.guest.cc import SIMULATED
from cocolab.pytest_plugin.keys import (
    ITEM_REQUEST,
    POOL,
    RIG,
    SELECTED,
    SHARD,
    STARTED,
    WORKER_RIG,
    WORKER_SELECTION,
)
from cocolab.results import RunFacts
from cocolab.rig import Rig

UNRESOLVED = "not resolved: no VM booted in this run"


def run_facts(config: pytest.Config, rig: Rig) -> RunFacts:
    """The results file's facts: lane_properties', as fields. A run that booted nothing
    (its own pool, or an xdist worker's) fetches no kernel and probes no QEMU to say them."""
    booted = _booted(config) or WORKER_RIG in config.stash
    props = lane_properties(rig) if booted else {
        "cocolab.lane": rig.lane.name, "cocolab.kernel": str(rig.kernel_setting.value),
        "cocolab.cc": cc_header(rig) if rig.lane.cc else "none", "cocolab.host_cpu": _host_cpu(),
        **dict.fromkeys(("cocolab.kernel_release", "cocolab.qemu", "cocolab.accel"),
                        UNRESOLVED)}
    config_sha = UNRESOLVED if not booted else "unavailable"
    patches: tuple[str, ...] = ()
    if booted:
        with contextlib.suppress(CocolabError, OSError):
            patches = rig.kernel.patches
            config_sha = hashlib.sha256(rig.kernel.config_path.read_bytes()).hexdigest()
    selection = config.stash.get(WORKER_SELECTION, None) or _selection(config)
    return RunFacts(
        lane=rig.lane.name, kernel=props["cocolab.kernel"],
        kernel_release=props["cocolab.kernel_release"], kernel_config_sha256=config_sha,
        qemu=props["cocolab.qemu"], accel=props["cocolab.accel"], cc=props["cocolab.cc"],
        host_cpu=props["cocolab.host_cpu"], started=config.stash[STARTED],
        selected=int(selection["selected"]), shard=selection["shard"],
        partition=selection["partition"], patches=patches, simulated=rig.lane.simulated)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the run was asked for; nothing here probes QEMU or fetches a kernel (a run whose
    tests boot no VM never does: see pytest_report_collectionfinish)."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints it
        return []
    rig = config.stash[RIG]
    lines = [f"cocolab lane: {rig.lane.name} ({rig.lane.description})"]
    k = rig.kernel_setting
    lines.append(f"cocolab kernel: {k.value} (from {k.source})")
    if rig.lane.cc:
        lines.append(f"cocolab cc: {cc_header(rig)}")
    return lines


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]
                                   ) -> list[str]:
    """The QEMU, accelerator and snapshots the selected tests' VMs will use, once collection
    says some will boot (the accelerator's verdict may be a proof boot of the lane's kernel);
    a --collect-only run boots nothing and is told nothing of them. (Under xdist the workers
    collect: the lines come at the end, from the workers that booted, see below.)"""
    if hasattr(config, "workerinput"):
        return []
    shard = config.stash.get(SHARD, None)
    lines = [shard.header()] if shard is not None else []
    if config.option.collectonly or not any(ITEM_REQUEST in i.stash for i in items):
        return lines  # nothing will boot: nothing to prove or probe
    return lines + _rig_lines(config)


def _rig_lines(config: pytest.Config) -> list[str]:
    rig, lines = config.stash[RIG], []
    try:
        info = rig.qemu_info
        lines.append(f"cocolab QEMU: {info.binary} {info.version}")
        lines.append(f"cocolab accelerator: {rig.accel.accel} ({rig.accel.reason})")
    except CocolabError as exc:
        lines.append(f"cocolab QEMU/accelerator: unavailable: {exc}")
    pool = config.stash[POOL]
    if pool.snapshots is None:
        lines.append(f"cocolab snapshots: off ({rig.snapshots_off})")
    else:
        store = pool.snapshots
        lines.append(f"cocolab snapshots: on ({store.root}: {len(store.entries())} kept, "
                     f"{store.size() >> 20} of {store.limit_bytes >> 20} MiB; --no-snapshots "
                     "boots cold)")
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker tells the controller, which collects nothing, what the run selected
    (and how it was split); one that booted a VM, what it booted with."""
    config = session.config
    output = getattr(config, "workeroutput", None)
    if output is None:
        return
    output["cocolab_selection"] = _selection(config)
    if _booted(config):
        output["cocolab_rig"] = _rig_lines(config)


@pytest.hookimpl(optionalhook=True)  # xdist's
def pytest_testnodedown(node: Any, error: object) -> None:
    said = getattr(node, "workeroutput", {})
    if said.get("cocolab_rig"):
        node.config.stash.setdefault(WORKER_RIG, said["cocolab_rig"])
    if said.get("cocolab_selection"):  # every worker collected the same selection
        node.config.stash.setdefault(WORKER_SELECTION, said["cocolab_selection"])


def _booted(config: pytest.Config) -> bool:
    pool = config.stash[POOL]
    return bool(pool.cold_boots + pool.restores or pool.failures)


def _selection(config: pytest.Config) -> dict[str, Any]:
    """The run's selection before any shard took its share, and the shard and partition."""
    shard = config.stash.get(SHARD, None)
    if shard is None:
        return {"selected": config.stash.get(SELECTED, 0), "shard": None,
                "partition": None}
    return {"selected": shard.selected, "shard": str(shard.spec),
            "partition": shard.partition.digest if shard.partition else None}


def cc_header(rig: Rig) -> str:
    lane = rig.lane
    if lane.simulated:
        return f"simulated {lane.cc.upper()} guest ({SIMULATED})"
    return f"{lane.cc.upper()} guest (hardware; each guest proves it before its tests)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    pool = terminalreporter.config.stash.get(POOL, None)
    if pool is None:
        return
    for line in terminalreporter.config.stash.get(WORKER_RIG, []):
        terminalreporter.write_line(f"{line} (xdist workers)")
    if pool.retired:
        terminalreporter.write_line(f"cocolab accelerator: {pool.retired}", yellow=True)
    if pool.cold_boots or pool.restores:
        ahead = f", {pool.booted_ahead} booted ahead of their tests" if pool.booted_ahead else ""
        terminalreporter.write_line(f"cocolab VMs: {pool.cold_boots} cold boot(s), "
                                    f"{pool.restores} restore(s) from snapshots{ahead}")
    for problem in pool.snapshot_problems:
        terminalreporter.write_line(f"cocolab snapshot dropped (its VM booted cold): {problem}",
                                    yellow=True)


def lane_properties(rig: Rig) -> dict[str, str]:
    """What a CI report needs to tell one lane's run from another's."""
    props = {"cocolab.lane": rig.lane.name, "cocolab.cc": cc_header(rig) if rig.lane.cc else "none",
             "cocolab.kernel": str(rig.kernel_setting.value)}

    def attempt(key: str, get: Callable[[], str]) -> None:
        try:
            props[key] = get()
        except CocolabError as exc:
            props[key] = f"unavailable: {exc}"

    attempt("cocolab.kernel_release", lambda: rig.kernel.release)
    attempt("cocolab.qemu", lambda: f"{rig.qemu_info.binary} {rig.qemu_info.version}")
    attempt("cocolab.accel", lambda: f"{rig.accel.accel} ({rig.accel.reason})")
    if rig.lane.hardware_cc:
        fw = rig.firmware(rig.lane.cc)
        props["cocolab.firmware"] = str(fw.found) if fw.found else fw.why_not(rig.lane.cc)
    props["cocolab.host_cpu"] = _host_cpu()
    return props


def _host_cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


@pytest.fixture(scope="session", autouse=True)
def _cocolab_junit_properties(request: pytest.FixtureRequest) -> None:
    """With --junitxml, the lane's facts become <property> elements of the test suite."""
    if not request.config.option.xmlpath:
        return
    record = request.getfixturevalue("record_testsuite_property")
    for name, value in lane_properties(request.config.stash[RIG]).items():
        record(name, value)
