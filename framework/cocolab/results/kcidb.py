"""Results as a KCIDB report (schema v5.3), validated by kcidb-io's own schema.

A checkout per kernel source and patch set, a build per checkout and config, a test per
cocolab test, lane and guest kind. Ids are derived from what identifies the object, never from
when it ran, so the same results exported twice give the same ids, and KCIDB, which merges
objects by id, de-duplicates a report submitted again (or by two shards):

    checkout  ORIGIN:ck-<sha256(release, patchset_hash)[:24]>
    build     ORIGIN:bd-<sha256(release, patchset_hash, config)[:24]>
    test      ORIGIN:ts-<sha256(build, lane, guest, nodeid)[:24]>
    issue     ORIGIN:is-<sha256(baseline)[:24]>, with an incident per test it covers

What was tested is in the ids, the path and the environment, never only in free text: the
patch set (`patchset_hash` over the patches' sha256s, as KCIDB defines it, and
`patchset_files`), the lane (the path's second segment), and the guest: `hw-tdx`, `sim-tdx`
(a simulated confidential guest, never a confidential one) or `plain`, in the test id and in
`environment.misc.guest`. Statuses come from results/verdict.py's table; a known issue (a lane
baseline) is a KCIDB issue with an incident on each test that hit it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cocolab.results import verdict
from cocolab.results.model import ResultsError, RunFacts, RunResults

ORIGIN = re.compile(r"[a-z0-9_]+")

SUBMIT = ("kcidb-submit -p PROJECT -t TOPIC < {file}   (the project and topic your KCIDB "
          "submitter credentials name)")


def _id(origin: str, kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    return f"{origin}:{kind}-{digest}"


_CC_KIND = re.compile(r"\b(tdx|snp)\b", re.IGNORECASE)
_SEGMENT = re.compile(r"[^a-zA-Z0-9_-]+")


def kcidb_path(nodeid: str, lane: str, ktap_path: str | None = None) -> str:
    """A KCIDB test path (dot-separated [a-zA-Z0-9_-] segments) for a pytest node id on a lane:
    tests/devmem/test_x.py::test_y[a/b] on cc-sim-tdx
    -> cocolab.cc-sim-tdx.devmem.test_x.test_y.a_b
    A kernel test is named by its own KTAP path instead, as other labs report it:
    kselftest.iommu.iommufd.iommufd.simple_close on default
    -> cocolab.default.kselftest.iommu.iommufd.iommufd.simple_close"""
    if ktap_path:
        segments = [_SEGMENT.sub("_", p).strip("_") or "_" for p in [lane, *ktap_path.split(".")]]
        return ".".join(["cocolab", *segments])
    file, _, rest = nodeid.partition("::")
    parts = [p for p in file.removesuffix(".py").split("/") if p and p != "tests"]
    name, _, param = rest.partition("[")
    parts += [p for p in name.split("::") if p]
    if param:
        parts.append(param.removesuffix("]"))
    segments = [_SEGMENT.sub("_", p).strip("_") or "_" for p in [lane, *parts]]
    return ".".join(["cocolab", *segments])


def guest_kind(cc: str, simulated: bool) -> str:
    """`plain`, `hw-tdx` / `hw-snp`, or `sim-tdx`: what kind of guest a run's tests ran in."""
    found = _CC_KIND.search(cc)
    if found is None:
        return "plain"
    return ("sim-" if simulated else "hw-") + found.group(1).lower()


def patchset(patches: Sequence[str]) -> tuple[str, list[dict[str, str]]]:
    """KCIDB's patchset_hash (sha256 over the newline-terminated sha256 of each patch, in
    order; "" for none) and patchset_files, from "SHA256 PATH" entries."""
    if not patches:
        return "", []
    digests = [p.split(" ", 1)[0] for p in patches]
    files = []
    for entry in patches:
        path = Path(entry.split(" ", 1)[1])
        files.append({"name": path.name, "url": path.as_uri() if path.is_absolute()
                      else path.name})
    return hashlib.sha256("".join(d + "\n" for d in digests).encode()).hexdigest(), files


def _checkout_and_build(origin: str, f: RunFacts) -> tuple[dict[str, Any], dict[str, Any]]:
    pset, files = patchset(f.patches)
    checkout_id = _id(origin, "ck", f.kernel_release, pset)
    patched = f" + {len(files)} patch(es)" if files else ""
    checkout: dict[str, Any] = {
        "id": checkout_id, "origin": origin, "patchset_hash": pset,
        "comment": f"kernel {f.kernel_release} ({f.kernel}){patched}",
        "misc": {"kernel": f.kernel, "kernel_release": f.kernel_release}}
    if files:
        checkout["patchset_files"] = files
    build_id = _id(origin, "bd", f.kernel_release, pset, f.kernel_config_sha256)
    build = {"id": build_id, "origin": origin, "checkout_id": checkout_id,
             "architecture": "x86_64",
             "comment": f"kernel {f.kernel_release}{patched} as cocolab booted it ({f.kernel})",
             "misc": {"kernel_config_sha256": f.kernel_config_sha256}}
    return checkout, build


def _environment(f: RunFacts) -> dict[str, Any]:
    guest = guest_kind(f.cc, f.simulated)
    kind = guest.partition("-")[2].upper()
    said = {"plain": "a plain (non-confidential) guest",
            "sim": f"a SIMULATED {kind} guest (not confidential)",
            "hw": f"a {kind} confidential guest"}[guest.partition("-")[0]]
    return {"comment": f"cocolab lane {f.lane}: {said}, on {f.host_cpu}",
            "misc": {"lane": f.lane, "guest": guest, "simulated": f.simulated, "cc": f.cc}}


def report(runs: Sequence[RunResults], origin: str) -> dict[str, Any]:
    """A KCIDB v5.3 report of `runs` (each one run, or merged shards), validated."""
    from kcidb_io import schema

    if not ORIGIN.fullmatch(origin):
        raise ResultsError(f"--origin {origin!r}: KCIDB origins are lowercase letters, digits "
                           "and underscores (the name of your CI system, e.g. my_tdx_lab)")
    objects: dict[str, dict[str, dict[str, Any]]] = {
        k: {} for k in ("checkouts", "builds", "tests", "issues", "incidents")}
    for run in runs:
        f = run.facts
        checkout, build = _checkout_and_build(origin, f)
        objects["checkouts"].setdefault(checkout["id"], checkout)
        objects["builds"].setdefault(build["id"], build)
        guest = guest_kind(f.cc, f.simulated)
        paths: dict[str, str] = {}
        for t in run.tests:
            path = kcidb_path(t.nodeid, f.lane, t.ktap_path)
            if path in paths and paths[path] != t.nodeid:  # two ids, one sanitized path
                path += "_" + hashlib.sha256(t.nodeid.encode()).hexdigest()[:6]
            paths[path] = t.nodeid
            test_id = _id(origin, "ts", build["id"], f.lane, guest, t.nodeid)
            misc: dict[str, Any] = {"nodeid": t.nodeid, "lane": f.lane, "outcome": t.outcome,
                                    "verdict": verdict.of(t).name, "qemu": f.qemu,
                                    "accel": f.accel, "cc": f.cc}
            for key in ("reason", "baseline", "bundle", "finding", "ktap_path"):
                if getattr(t, key):
                    misc[key] = getattr(t, key)
            objects["tests"][test_id] = {
                "id": test_id, "origin": origin, "build_id": build["id"], "path": path,
                "status": verdict.of(t).words.kcidb, "duration": t.duration,
                "start_time": f.started, "environment": _environment(f), "misc": misc}
            if t.baseline and verdict.of(t) is verdict.Verdict.KNOWN:
                _known_issue(objects, origin, t.baseline, test_id)
    document = {"version": {"major": schema.V5_3.major, "minor": schema.V5_3.minor},
                **{kind: list(found.values()) for kind, found in objects.items() if found}}
    try:
        schema.V5_3.validate_exactly(document)
    except Exception as exc:  # jsonschema's ValidationError, many lines: the first says it
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultsError(f"cocolab bug: the KCIDB report does not validate: {first}"
                           ) from exc
    return document


def _known_issue(objects: dict[str, dict[str, dict[str, Any]]], origin: str, baseline: str,
                 test_id: str) -> None:
    """A lane baseline as a KCIDB issue (the tested code's: culprit code), and its incident."""
    issue_id = _id(origin, "is", baseline)
    objects["issues"].setdefault(issue_id, {
        "id": issue_id, "version": 1, "origin": origin, "comment": baseline[:1000],
        "culprit": {"code": True, "tool": False, "harness": False}})
    incident_id = _id(origin, "in", issue_id, test_id)
    objects["incidents"][incident_id] = {
        "id": incident_id, "origin": origin, "issue_id": issue_id, "issue_version": 1,
        "test_id": test_id, "present": True}


def counts(document: dict[str, Any]) -> dict[str, int]:
    return {kind: len(document.get(kind, [])) for kind in ("checkouts", "builds", "tests")}
