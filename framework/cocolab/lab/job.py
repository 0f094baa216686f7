"""A KernelCI pull-lab job, read and checked; and its results as KernelCI nodes.

The job definition is the one kernelci-core's `config/runtime/base/pull_labs.jinja2` renders
(the PULL_LABS protocol): `artifacts` (kernel, modules, ...: URLs), `tests` (each with an id,
a type, `timeout_s` and `parameters`), `environment` (platform, arch), `callback` (url,
token_name) and `integrity.sha256` (artifact name -> digest). cocolab runs tests of type
"cocolab", whose `parameters` is the pytest selection (paths under tests/, space-separated).
cocolab needs the kernel's config beside the kernel (it gates tests on it): a job gives it as
the `config` artifact (a kbuild node's artifacts carry it).

Results go back as nodes in KernelCI's node form (kind, name, path, state, result, data): the
job node, done, with its result; a `boot` node; a node per suite and per test. A job the lab
could not run to a verdict (bad definition, download, checksum, a VM that would not boot,
pytest itself failing) is `incomplete` with `data.error_code = "Infrastructure"`: never a
kernel failure.
"""

from __future__ import annotations

import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cocolab.errors import CocolabError
from cocolab.results import RunResults

TEST_TYPE = "cocolab"
INFRA = "Infrastructure"
USED_ARTIFACTS = ("kernel", "config", "modules")
"""The artifacts the lab fetches; a job's others (a dtb, a ramdisk) are not for QEMU here."""

_SELECTION = re.compile(r"tests/[A-Za-z0-9_./-]*(::[A-Za-z0-9_\[\]/.:=,+-]+)?")

RESULT = {"passed": "pass", "xpassed": "pass", "failed": "fail", "xfailed": "fail",
          "skipped": "skip", "error": "incomplete"}
"""A test's verdict as a KernelCI node result. An xfail is a kernel failure the lane knows
(its baseline says why, in data): fail, as in KCIDB."""


class JobError(CocolabError):
    """The lab cannot run this job to a verdict: reported as an infrastructure error."""


@dataclass(frozen=True)
class Job:
    node_id: str
    artifacts: dict[str, str]
    sha256: dict[str, str]
    selection: tuple[str, ...]
    timeout_s: float
    callback_url: str
    token_name: str
    platform: str = ""

    @classmethod
    def parse(cls, node_id: str, data: object) -> Job:
        """The job definition, checked: every problem one JobError line."""
        if not isinstance(data, dict):
            raise JobError("the job definition is not a JSON object")
        artifacts = data.get("artifacts")
        if not isinstance(artifacts, dict) or not all(
                isinstance(v, str) for v in artifacts.values()):
            raise JobError("the job definition has no artifacts object of URLs")
        for needed in ("kernel", "config"):
            if needed not in artifacts:
                raise JobError(f"the job gives no {needed!r} artifact (cocolab boots the kernel "
                               "and gates its tests on the config)")
        used = {name: url for name, url in artifacts.items() if name in USED_ARTIFACTS}
        for name, url in used.items():
            if urllib.parse.urlparse(url).scheme not in ("http", "https"):
                raise JobError(f"the {name} artifact {url!r} is not an http(s) URL")
        env = data.get("environment")
        env = env if isinstance(env, dict) else {}
        if env.get("arch", "x86_64") != "x86_64":
            raise JobError(f"the job is for arch {env.get('arch')!r}; this lab runs x86_64")
        tests = [t for t in data.get("tests") or [] if isinstance(t, dict)]
        ours = [t for t in tests if t.get("type") == TEST_TYPE]
        if not ours:
            kinds = sorted({str(t.get("type")) for t in tests}) or ["none"]
            raise JobError(f"the job has no test of type {TEST_TYPE!r} (it has "
                           f"{', '.join(kinds)})")
        selection: list[str] = []
        timeout = 0.0
        for test in ours:
            words = str(test.get("parameters", "")).split()
            bad = [w for w in words if not _SELECTION.fullmatch(w) or ".." in w.split("/")]
            if not words or bad:
                raise JobError(f"test {test.get('id')!r}: parameters {test.get('parameters')!r} "
                               "must name test paths under tests/, such as tests/devmem")
            selection += words
            try:
                timeout += float(test.get("timeout_s", 600))
            except (TypeError, ValueError):
                raise JobError(f"test {test.get('id')!r}: timeout_s "
                               f"{test.get('timeout_s')!r} is not seconds") from None
        callback = data.get("callback")
        if not isinstance(callback, dict) or not isinstance(callback.get("url"), str):
            raise JobError("the job definition has no callback url to post results to")
        integrity = data.get("integrity", {})
        sums = integrity.get("sha256", {}) if isinstance(integrity, dict) else {}
        sha256 = {k: v for k, v in sums.items() if isinstance(v, str) and not k.startswith("_")}
        return cls(node_id, used, sha256, tuple(selection), timeout,
                   callback["url"], str(callback.get("token_name", "")),
                   str(env.get("platform", "")))


@dataclass
class Outcome:
    """What the lab says of a job: the job node's result, why, and its child nodes."""

    result: str
    error: str = ""
    """Why the job is incomplete (an infrastructure error), else empty."""
    nodes: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def job_node(self) -> dict[str, Any]:
        data = dict(self.data)
        if self.error:
            data.update(error_code=INFRA, error_msg=self.error[:1000])
        return {"state": "done", "result": self.result, "data": data}


def infra(error: str) -> Outcome:
    return Outcome("incomplete", error)


def _suite(nodeid: str) -> str:
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0].removesuffix(".py")


def outcome(run: RunResults) -> Outcome:
    """The job's result from a finished run: incomplete (infrastructure) if no test ran or a
    VM misbehaved (the rig's side), else fail if any test failed or errored, else pass."""
    tests = run.tests
    facts = {"lane": run.facts.lane, "kernel_release": run.facts.kernel_release,
             "qemu": run.facts.qemu, "accel": run.facts.accel, "cc": run.facts.cc}
    nodes: list[dict[str, Any]] = []
    rig = [t for t in tests if t.rig_failure]
    ran = [t for t in tests if t.outcome != "skipped"]
    boot = "incomplete" if rig else "pass" if ran else "skip"
    nodes.append({"kind": "test", "name": "boot", "path": ["boot"], "state": "done",
                  "result": boot, "data": {**facts, **(
                      {"error_code": INFRA, "error_msg": rig[0].reason} if rig else {})}})
    suites: dict[str, list[str]] = {}
    for t in tests:
        result = RESULT[t.outcome]
        data: dict[str, Any] = {"nodeid": t.nodeid, "outcome": t.outcome,
                                "duration": t.duration}
        for key in ("reason", "baseline", "bundle"):
            if getattr(t, key):
                data[key] = getattr(t, key)
        if t.outcome == "error":
            data["error_code"] = INFRA if t.rig_failure else "Test"
        suite = _suite(t.nodeid)
        name = t.nodeid.split("/", 2)[-1] if t.nodeid.startswith("tests/") else t.nodeid
        nodes.append({"kind": "test", "name": name, "path": [suite, name], "state": "done",
                      "result": result, "data": data})
        suites.setdefault(suite, []).append(result)
    for suite, results in suites.items():
        worst = next((r for r in ("incomplete", "fail", "pass") if r in results), "skip")
        nodes.append({"kind": "test", "name": suite, "path": [suite], "state": "done",
                      "result": worst, "data": dict(Counter(results))})
    counts = dict(Counter(t.outcome for t in tests))
    if not tests:
        return Outcome("incomplete", "the run collected no test", nodes, facts)
    if rig:
        return Outcome("incomplete", f"{len(rig)} test(s) lost their VM (the rig's side, not "
                       f"the kernel's): {rig[0].nodeid}: {rig[0].reason}", nodes,
                       {**facts, "outcomes": counts})
    failed = any(t.outcome in ("failed", "error") for t in tests)
    return Outcome("fail" if failed else "pass", "", nodes, {**facts, "outcomes": counts})
