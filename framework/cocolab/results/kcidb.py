"""Results as a KCIDB report (schema v5.3), validated by kcidb-io's own schema.

One checkout and one build per kernel (its release and config), one test per cocolab test
and lane. Ids are derived from what identifies the object, never from when it ran, so the same
results exported twice give the same ids, and KCIDB, which merges objects by id, de-duplicates
a report submitted again (or by two shards):

    checkout  ORIGIN:ck-<sha256(release, config)[:24]>
    build     ORIGIN:bd-<sha256(release, config)[:24]>
    test      ORIGIN:ts-<sha256(release, config, lane, nodeid)[:24]>

Statuses: passed PASS, failed FAIL, an xfail (a lane baseline or a known finding: the kernel
failed the assertion) FAIL with the reason in misc, xpassed PASS, skipped SKIP, an error ERROR,
and a rig failure (the VM misbehaved: the harness, not the kernel) MISS.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from cocolab.results.model import ResultsError, RunResults, TestResult

ORIGIN = re.compile(r"[a-z0-9_]+")

STATUS = {"passed": "PASS", "failed": "FAIL", "xfailed": "FAIL", "xpassed": "PASS",
          "skipped": "SKIP", "error": "ERROR"}

SUBMIT = ("kcidb-submit -p PROJECT -t TOPIC < {file}   (the project and topic your KCIDB "
          "submitter credentials name)")


def _id(origin: str, kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    return f"{origin}:{kind}-{digest}"


_SEGMENT = re.compile(r"[^a-zA-Z0-9_-]+")


def kcidb_path(nodeid: str) -> str:
    """A KCIDB test path (dot-separated [a-zA-Z0-9_-] segments) for a pytest node id:
    tests/devmem/test_x.py::test_y[a/b] -> cocolab.devmem.test_x.test_y.a_b"""
    file, _, rest = nodeid.partition("::")
    parts = [p for p in file.removesuffix(".py").split("/") if p and p != "tests"]
    name, _, param = rest.partition("[")
    parts += [p for p in name.split("::") if p]
    if param:
        parts.append(param.removesuffix("]"))
    segments = [_SEGMENT.sub("_", p).strip("_") or "_" for p in parts]
    return ".".join(["cocolab", *segments])


def _status(test: TestResult) -> str:
    return "MISS" if test.rig_failure else STATUS[test.outcome]


def report(runs: Sequence[RunResults], origin: str) -> dict[str, Any]:
    """A KCIDB v5.3 report of `runs` (each one run, or merged shards), validated."""
    from kcidb_io import schema

    if not ORIGIN.fullmatch(origin):
        raise ResultsError(f"--origin {origin!r}: KCIDB origins are lowercase letters, digits "
                           "and underscores (the name of your CI system, e.g. my_tdx_lab)")
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: dict[str, dict[str, Any]] = {}
    for run in runs:
        f = run.facts
        kernel = (f.kernel_release, f.kernel_config_sha256)
        checkout_id = _id(origin, "ck", *kernel)
        checkouts.setdefault(checkout_id, {
            "id": checkout_id, "origin": origin,
            "comment": f"kernel {f.kernel_release} ({f.kernel})",
            "misc": {"kernel": f.kernel, "kernel_release": f.kernel_release}})
        build_id = _id(origin, "bd", *kernel)
        builds.setdefault(build_id, {
            "id": build_id, "origin": origin, "checkout_id": checkout_id,
            "architecture": "x86_64",
            "comment": f"kernel {f.kernel_release} as cocolab booted it ({f.kernel})",
            "misc": {"kernel_config_sha256": f.kernel_config_sha256}})
        paths: dict[str, str] = {}
        for t in run.tests:
            path = kcidb_path(t.nodeid)
            if path in paths and paths[path] != t.nodeid:  # two ids, one sanitized path
                path += "_" + hashlib.sha256(t.nodeid.encode()).hexdigest()[:6]
            paths[path] = t.nodeid
            test_id = _id(origin, "ts", *kernel, f.lane, t.nodeid)
            misc: dict[str, Any] = {"nodeid": t.nodeid, "lane": f.lane, "outcome": t.outcome,
                                    "qemu": f.qemu, "accel": f.accel, "cc": f.cc}
            for key in ("reason", "baseline", "bundle"):
                if getattr(t, key):
                    misc[key] = getattr(t, key)
            tests[test_id] = {
                "id": test_id, "origin": origin, "build_id": build_id, "path": path,
                "status": _status(t), "duration": t.duration, "start_time": f.started,
                "environment": {"comment": f"cocolab lane {f.lane} on {f.host_cpu}",
                                "misc": {"lane": f.lane, "cc": f.cc}},
                "misc": misc}
    document = {"version": {"major": schema.V5_3.major, "minor": schema.V5_3.minor},
                "checkouts": list(checkouts.values()), "builds": list(builds.values()),
                "tests": list(tests.values())}
    try:
        schema.V5_3.validate_exactly(document)
    except Exception as exc:  # jsonschema's ValidationError, many lines: the first says it
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultsError(f"cocolab bug: the KCIDB report does not validate: {first}"
                           ) from exc
    return document


def counts(document: dict[str, Any]) -> dict[str, int]:
    return {kind: len(document.get(kind, [])) for kind in ("checkouts", "builds", "tests")}
