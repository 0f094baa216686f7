"""A KernelCI pull-lab job, read and checked; and its results in the callback's words.

The job definition is what kernelci-core's `config/runtime/base/pull_labs.jinja2` renders:

    artifacts    {kernel, modules, kselftest, rootfs, ramdisk, initrd, dtb}: URLs, no config
    tests[]      {id, type, depends, timeout_s, subset, parameters (a string), pre-commands,
                  post-commands}
    environment  {platform, arch, console {method, baud}, requirements}
    callback     {url: "<instance callback>/node/<job node id>", token_name}
    parameters   tuxrun's K=V (optional, not ours)
    integrity    {sha256: {artifact: digest}} (optional; "_comment" when the pipeline had none)

cocolab runs the tests of type "cocolab", whose `parameters` is the pytest selection (paths
under tests/, space-separated). It boots the kernel, with the modules if given; the config it
gates tests on is not in the job, and the lab finds it elsewhere (lab/agent.py).

Results go back in one of two bodies (`Outcome.body`):

- `pull_labs`, the protocol's, as kernelci-core `kernelci/runtime/pull_labs.py` `Callback`
  parses it: `tests` {suite: {status, duration_ms, subtests {test: {status, duration_ms}}}},
  `summary` {total, failed}, `metadata` {system, error_code}, `error_code`/`error_msg` for a job
  without a kernel verdict, `artifacts.log` ("base64:" + gzip of the pytest log);
- `lava`, what kernelci-pipeline's callback service (src/lava_callback.py) parses today,
  with `kernelci.runtime.lava.Callback`: `definition` (YAML: JSON is YAML), LAVA's job `status`,
  `results` {"lava": the job stage, "N_suite": the suite's tests} as YAML lists, and `log`.

Every status comes from results/verdict.py's table. A job without a kernel verdict (a bad
definition, a download, a checksum, a timeout, pytest failing, a VM that misbehaved) carries
`error_code` "Infrastructure": never a kernel failure. A test's own error is "Test".
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cocolab.errors import CocolabError
from cocolab.results import RunResults
from cocolab.results.verdict import Verdict, of, worst

TEST_TYPE = "cocolab"
INFRA = "Infrastructure"
TEST_ERROR = "Test"
USED_ARTIFACTS = ("kernel", "modules")
"""The artifacts the lab fetches; a job's others (a dtb, a ramdisk) are not for QEMU here."""
MAX_TIMEOUT_S = 6 * 3600.0
"""The most a job's tests may ask for in all: a job saying more is refused, not obeyed."""

NODE_ID = re.compile(r"[0-9a-f]{24}")
"""A KernelCI node id (a MongoDB ObjectId): anything else from the API is refused before it
names a file or a URL."""

_SELECTION = re.compile(r"tests/[A-Za-z0-9_./-]*(::[A-Za-z0-9_\[\]/.:=,+-]+)?")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class JobError(CocolabError):
    """The lab cannot run this job to a verdict: reported as an infrastructure error."""


def check_node_id(node_id: object, what: str = "node id") -> str:
    if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
        raise JobError(f"{what} {str(node_id)[:80]!r} is not a KernelCI node id "
                       "(24 hex digits)")
    return node_id


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
        check_node_id(node_id)
        if not isinstance(data, dict):
            raise JobError("the job definition is not a JSON object")
        env = data.get("environment")
        env = env if isinstance(env, dict) else {}
        if env.get("arch", "x86_64") != "x86_64":
            raise JobError(f"the job is for arch {env.get('arch')!r}; this lab runs x86_64")
        selection, timeout = _tests(data.get("tests"))
        callback = data.get("callback")
        if not isinstance(callback, dict) or not isinstance(callback.get("url"), str) \
                or not isinstance(callback.get("token_name"), str):
            raise JobError("the job definition has no callback url and token_name to post "
                           "results with")
        return cls(node_id, _artifacts(data.get("artifacts")), _sums(data.get("integrity")),
                   selection, timeout, callback["url"], callback["token_name"],
                   str(env.get("platform", "")))


def _artifacts(artifacts: object) -> dict[str, str]:
    if not isinstance(artifacts, dict) or not all(
            isinstance(v, str) for v in artifacts.values()):
        raise JobError("the job definition has no artifacts object of URLs")
    if "kernel" not in artifacts:
        raise JobError("the job gives no 'kernel' artifact to boot")
    used = {name: url for name, url in artifacts.items() if name in USED_ARTIFACTS}
    for name, url in used.items():
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise JobError(f"the {name} artifact {url[:200]!r} is not an http(s) URL")
    return used


def _sums(integrity: object) -> dict[str, str]:
    """integrity.sha256, without the template's "_comment" (no checksums were known)."""
    if integrity is None:
        return {}
    sums = integrity.get("sha256") if isinstance(integrity, dict) else None
    if not isinstance(sums, dict):
        raise JobError("the job's integrity has no sha256 object")
    found = {k: v for k, v in sums.items() if not k.startswith("_")}
    for name, digest in found.items():
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise JobError(f"integrity.sha256.{name} {str(digest)[:80]!r} is not a sha256")
    return {k: v.lower() for k, v in found.items()}


def _tests(tests: object) -> tuple[tuple[str, ...], float]:
    """The selection of the tests of type cocolab, and the seconds they may take in all."""
    listed = [t for t in tests if isinstance(t, dict)] if isinstance(tests, list) else []
    ours = [t for t in listed if t.get("type") == TEST_TYPE]
    if not ours:
        kinds = sorted({str(t.get("type")) for t in listed}) or ["none"]
        raise JobError(f"the job has no test of type {TEST_TYPE!r} (it has {', '.join(kinds)})")
    selection: list[str] = []
    timeout = 0.0
    for test in ours:
        parameters = test.get("parameters")
        if not isinstance(parameters, str):
            raise JobError(f"test {test.get('id')!r}: parameters is "
                           f"{type(parameters).__name__}, not the string the template renders")
        words = parameters.split()
        bad = [w for w in words if not _SELECTION.fullmatch(w) or ".." in w.split("/")]
        if not words or bad:
            raise JobError(f"test {test.get('id')!r}: parameters {parameters[:200]!r} must "
                           "name test paths under tests/, such as tests/devmem")
        selection += words
        seconds = test.get("timeout_s", 600)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise JobError(f"test {test.get('id')!r}: timeout_s {str(seconds)[:40]!r} is not a "
                           "positive number of seconds")
        timeout += seconds
    if timeout > MAX_TIMEOUT_S:
        raise JobError(f"the job's tests ask for {timeout:g} s in all; this lab runs a job for "
                       f"at most {MAX_TIMEOUT_S:g} s")
    return tuple(selection), timeout


@dataclass
class Outcome:
    """What the lab says of a job: its verdict, why there is none (an error code and line),
    the run's results and log."""

    verdict: Verdict | None
    error: str = ""
    error_code: str = ""
    run: RunResults | None = None
    log: bytes = b""
    system: str = ""
    config_from: str = ""
    """Where the kernel config the tests were gated on came from."""

    @property
    def result(self) -> str:
        """The job node's result as KernelCI's callback will make it."""
        if self.error_code:
            return "incomplete"
        assert self.verdict is not None
        return "fail" if self.verdict.words.failed else (
            "skip" if self.verdict is Verdict.SKIP else "pass")

    def body(self, form: str = "pull_labs") -> dict[str, Any]:
        return lava_body(self) if form == "lava" else pull_labs_body(self)


def infra(error: str, log: bytes = b"") -> Outcome:
    """No kernel verdict: an infrastructure error, with the pytest log if one ran."""
    return Outcome(None, error, INFRA, log=log)


def suite_of(nodeid: str) -> str:
    """tests/devmem/test_x.py::t -> devmem; a file outside a suite directory names itself."""
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[-1].removesuffix(".py")


def _test_name(nodeid: str) -> str:
    return nodeid.split("/", 2)[-1] if nodeid.startswith("tests/") else nodeid


def outcome(run: RunResults, log: bytes = b"", system: str = "") -> Outcome:
    """The job's outcome from a finished run: no kernel verdict (Infrastructure) when nothing
    ran or a VM misbehaved, a test's own error ("Test"), else the worst test verdict."""
    verdicts = [of(t) for t in run.tests]
    job = worst(verdicts)
    if job is None:
        return Outcome(None, "the run collected no test", INFRA, run, log, system)
    rig = [t for t in run.tests if of(t) is Verdict.RIG]
    if rig:
        return Outcome(job, f"{len(rig)} test(s) could not run for the rig's reasons, not the "
                       f"kernel's: {rig[0].nodeid}: {rig[0].reason}", INFRA, run, log, system)
    erred = [t for t in run.tests if of(t) is Verdict.ERROR]
    if erred:
        return Outcome(job, f"{len(erred)} test(s) erred: {erred[0].nodeid}: "
                       f"{erred[0].reason}", TEST_ERROR, run, log, system)
    return Outcome(job, "", "", run, log, system)


def _suites(run: RunResults | None) -> dict[str, dict[str, Any]]:
    suites: dict[str, dict[str, Any]] = {}
    for t in run.tests if run else []:
        suite = suites.setdefault(suite_of(t.nodeid), {"subtests": {}, "verdicts": []})
        suite["subtests"][_test_name(t.nodeid)] = {
            "status": of(t).words.pull_labs, "duration_ms": round(t.duration * 1000)}
        suite["verdicts"].append(of(t))
    return suites


def _gzip64(log: bytes) -> str:
    return "base64:" + base64.b64encode(gzip.compress(log, mtime=0)).decode()


def pull_labs_body(out: Outcome) -> dict[str, Any]:
    """The PULL_LABS results body (kernelci-core runtime/pull_labs.py `Callback`)."""
    tests: dict[str, Any] = {}
    for name, suite in _suites(out.run).items():
        verdict = worst(suite["verdicts"])
        assert verdict is not None
        tests[name] = {"status": verdict.words.pull_labs,
                       "duration_ms": sum(s["duration_ms"] for s in suite["subtests"].values()),
                       "subtests": suite["subtests"]}
    leaves = [of(t) for t in out.run.tests] if out.run else []
    metadata: dict[str, Any] = {"system": out.system or "cocolab"}
    if out.run is not None:
        metadata.update(lane=out.run.facts.lane, kernel_release=out.run.facts.kernel_release,
                        cc=out.run.facts.cc)
    if out.config_from:
        metadata["kernel_config"] = out.config_from
    body: dict[str, Any] = {
        "tests": tests,
        "summary": {"total": len(leaves), "failed": sum(v.words.failed for v in leaves)},
        "metadata": metadata, "artifacts": {"log": _gzip64(out.log)} if out.log else {}}
    if out.error_code:
        metadata["error_code"] = out.error_code
        body.update(error_code=out.error_code, error_msg=out.error[:1000])
    return body


LAVA_COMPLETE, LAVA_INCOMPLETE = 2, 3
"""LAVA's job states, as kernelci-core runtime/lava.py copies them from lava-server."""


def lava_body(out: Outcome) -> dict[str, Any]:
    """The body kernelci-pipeline's callback service parses today (runtime/lava.py
    `Callback`): its YAML fields are written as JSON, which YAML reads."""
    job_stage = {"name": "job", "result": "fail" if out.error_code else "pass",
                 "metadata": {"error_type": out.error_code or None,
                              "error_msg": out.error[:1000] if out.error_code else None}}
    stages: list[dict[str, Any]] = [job_stage]
    results: dict[str, str] = {}
    for i, (name, suite) in enumerate(_suites(out.run).items(), start=1):
        verdict = worst(suite["verdicts"])
        assert verdict is not None
        # the suite's stage: lava.Callback takes a suite's result from it (an error is
        # "incomplete" there, as the PULL_LABS Callback makes it), so suite and job agree
        stages.append({"name": f"{i}_{name}", "metadata": {}, "result": (
            "incomplete" if verdict.words.pull_labs == "error" else verdict.words.pull_labs)})
        results[f"{i}_{name}"] = json.dumps([
            {"name": test, "result": "unknown" if sub["status"] == "error" else sub["status"],
             "metadata": {"duration_ms": sub["duration_ms"]}}
            for test, sub in suite["subtests"].items()])
    results["lava"] = json.dumps(stages)
    log = [{"dt": "", "lvl": "target", "msg": line}
           for line in out.log.decode(errors="replace").splitlines()]
    return {"definition": json.dumps({"metadata": {"system": out.system or "cocolab"}}),
            "status": LAVA_INCOMPLETE if out.error_code else LAVA_COMPLETE,
            "actual_device_id": out.system or "cocolab",
            "results": results, "log": json.dumps(log)}
