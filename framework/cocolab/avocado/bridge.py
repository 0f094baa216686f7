"""The pytest side of the avocado bridge, loaded with `-p cocolab.avocado.bridge`.

`--cocolab-avocado-collect FILE` (with --collect-only): every collected item's node id and
avocado tags, with pytest's rootdir, as JSON. `--cocolab-avocado-report FILE`: every report
pytest made, reduced to a `verdict.Phase`, and the failure bundle of each item that has one.
Both are written by pytest itself, so the resolver and the runner never parse pytest's prose.
This module never imports avocado: it runs inside pytest, in whatever environment the tests do.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import pytest

from cocolab.avocado.verdict import Phase
from cocolab.config import load_lane
from cocolab.config.lane import lane_names
from cocolab.errors import ConfigError
from cocolab.pytest_plugin.keys import ITEM_BUNDLE, ITEM_REQUEST, RIG
from cocolab.pytest_plugin.markers import kconfig_requirements

FLAT_MARKERS = ("fresh_vm", "destructive")
REASON_CHARS = 2000

_REPORTS = pytest.StashKey[list[dict[str, object]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cocolab-avocado", "cocolab under avocado (internal)")
    group.addoption("--cocolab-avocado-collect", metavar="FILE",
                    help="write the collected items and their avocado tags to FILE (JSON)")
    group.addoption("--cocolab-avocado-report", metavar="FILE",
                    help="write each test report, reduced to its verdict, to FILE (JSON)")


def _cc_lanes() -> dict[str, bool]:
    """Each shipped lane's name: whether it boots confidential guests."""
    lanes = {}
    for name in lane_names():
        try:
            lanes[name] = bool(load_lane(name).cc)
        except ConfigError:
            continue  # a broken lane file is the plugin's usage error, not a tag
    return lanes


def item_tags(item: pytest.Item, lanes: dict[str, bool]) -> dict[str, list[str] | None]:
    """avocado tags of one item: flat tags map to None, key:value tags to their values.

      suite:<dir under tests/>   machine:<the machine it boots>   topology:<name>
      kconfig:<OPTION> for each option it or its machine needs
      lane:<each lane it can run on>
      vm, fresh_vm, destructive (flat)
    """
    tags: dict[str, list[str] | None] = {}
    parts = Path(item.nodeid.split("::")[0]).parts
    if len(parts) > 2 and parts[0] == "tests":
        tags["suite"] = [parts[1]]
    fixtures = getattr(item, "fixturenames", ())
    request = item.stash.get(ITEM_REQUEST, None)
    reqs = kconfig_requirements(item)
    if request is not None:
        tags["vm"] = None
        machine, _, _ = item.config.stash[RIG].layout(request.machine, request.topology)
        tags["machine"] = [machine.name]
        if request.topology:
            tags["topology"] = [request.topology]
        reqs += machine.kconfig  # what the kernel needs to drive the machine is needed too
    options = [name.removeprefix("CONFIG_") for name, _ in reqs]
    if options:
        tags["kconfig"] = sorted(set(options))
    # a test that asks for proof of confidentiality runs on confidential lanes only
    cc_only = "cc_guest" in fixtures
    tags["lane"] = [name for name, cc in lanes.items() if cc or not cc_only]
    for name in FLAT_MARKERS:
        if item.get_closest_marker(name) is not None:
            tags[name] = None
    return tags


@pytest.hookimpl(trylast=True)  # after cocolab's own hook has read each item's markers
def pytest_collection_finish(session: pytest.Session) -> None:
    path = session.config.getoption("cocolab_avocado_collect")
    if not path:
        return
    lanes = _cc_lanes()
    items = [{"nodeid": item.nodeid, "tags": item_tags(item, lanes)} for item in session.items]
    Path(path).write_text(json.dumps({"rootdir": str(session.config.rootpath),
                                      "items": items}, indent=1))


def _reason(report: pytest.TestReport) -> str:
    """The one thing a reader of avocado's results needs: the skip reason, the failure's
    message (pytest's own short summary line), or the xfail reason."""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if hasattr(report, "wasxfail") and not report.failed:  # xfail, xpass: the mark's reason
        text = str(report.wasxfail)
    elif report.skipped and isinstance(longrepr, tuple):
        text = str(longrepr[2]).removeprefix("Skipped: ")
    elif crash is not None:
        text = crash.message
    else:
        text = str(longrepr or "")
    return text.strip()[:REASON_CHARS]


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: cocolab's bundle is written by now
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if item.config.getoption("cocolab_avocado_report"):
        phase = Phase(report.when, report.outcome, _reason(report),
                      xfail=hasattr(report, "wasxfail"),
                      rig_failure=bool(getattr(report, "cocolab_rig_failure", False)))
        entry = {"nodeid": item.nodeid, **phase.to_json()}
        bundle = item.stash.get(ITEM_BUNDLE, None)
        if bundle is not None:
            entry["bundle"] = str(bundle)
        item.config.stash.setdefault(_REPORTS, []).append(entry)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("cocolab_avocado_report")
    if path:
        Path(path).write_text(json.dumps(session.config.stash.get(_REPORTS, []), indent=1))
