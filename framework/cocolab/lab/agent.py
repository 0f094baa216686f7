"""`cocolab lab`: a KernelCI pull lab, speaking the protocol as KernelCI's own code does.

    events    GET  API/events?kind=job&state=available&recursive=true&limit=N&from=T
              kernelci-pipeline's scheduler leaves a pull-lab job node `available`
              (src/scheduler.py, since 2026-05; `--state` for older deployments). Each event's
              node names its job definition (artifacts.job_definition), its runtime and
              platform (data), and its parent, the kbuild node.
    job       GET  <artifacts.job_definition>                    no token: it is storage
    config    GET  API/node/<parent>, then its artifacts._config   kbuild's .config
    results   POST <callback.url>  the PULL_LABS body (or --callback-format lava), with the
              token that callback.token_name names (--callback-token NAME=FILE): the
              callback service answers 202 and stores the results on the job node.

The lab never writes a node: the API lets only a node's owner update it (kernelci-api), and
its transition table refuses `available -> running` (kernelci-core api/models.py), so there
is no claim. A job taken is written in the work directory's ledger first, so a restarted lab
never runs it twice; labs that share a runtime share nothing else, which is why each lab
needs a runtime of its own (docs/ci-lanes.md).

A job is input from the network, and treated as hostile: the API token goes to the API's
origin only (never to an artifact, job definition or callback URL); http is refused but on
loopback (or with `insecure_http`); node ids must be KernelCI's (24 hex digits) before they
name a file or URL; every artifact used needs a sha256 (or `allow_unverified`); downloads and
unpacked archives are bounded; tar members get the lab's owner and lose setuid, setgid and
sticky bits; the work directory is 0700. Every way a job cannot reach a verdict is an
infrastructure error (lab/job.py), never a kernel failure.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cocolab.errors import CocolabError, ConfigError
from cocolab.lab import fetch
from cocolab.lab.job import Job, JobError, Outcome, check_node_id, infra, outcome
from cocolab.paths import private_dir
from cocolab.results import ResultsError
from cocolab.results import load as load_results

LOG = logging.getLogger(__name__)

RETRIES = 5
BACKOFF_S = 1.0
INTERRUPT_GRACE_S = 30.0
"""How long pytest gets to shut its VMs down after SIGINT before it is killed."""
LOG_TAIL = 4 << 20
"""The most of a pytest log a callback carries (its end)."""
CONFIG_ARTIFACT = "_config"
"""kernelci-core kbuild.py uploads `.config`; map_artifact_name turns dots into underscores."""


class ApiError(CocolabError):
    """The API did not answer usefully, RETRIES times."""


def check_transport(url: str, what: str, insecure_http: bool) -> None:
    """https, or http to a loopback address (or anywhere with --insecure-http)."""
    scheme, host, _ = fetch.origin(url)
    if scheme == "https" or (scheme == "http" and (insecure_http or fetch.loopback(host))):
        return
    raise JobError(f"{what} {url[:200]!r}: only https (http on loopback, or with "
                   "--insecure-http)")


@dataclass
class Api:
    base: str
    token: str
    retries: int = RETRIES
    backoff_s: float = BACKOFF_S
    insecure_http: bool = False
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        try:
            check_transport(self.base, "--api", self.insecure_http)
        except JobError as exc:
            raise ConfigError(str(exc)) from None

    def request(self, method: str, url: str, body: object = None,
                token: str | None = None) -> Any:
        """JSON in, JSON out, retried with backoff on a lost connection or a 5xx; a 4xx is
        the answer (raised as HTTPError at once). The API token rides only to the API's own
        origin; `token` overrides it (a callback's)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = token
        elif fetch.origin(url) == fetch.origin(self.base) and self.token:
            headers["Authorization"] = self.token
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay, last = self.backoff_s, ""
        for attempt in range(1, self.retries + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with fetch.OPENER.open(req, timeout=fetch.HTTP_TIMEOUT_S) as resp:
                    text = resp.read(fetch.JSON_CAP + 1)
                if len(text) > fetch.JSON_CAP:
                    raise ApiError(f"{method} {url}: an answer over {fetch.JSON_CAP} bytes")
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
                last = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
                last = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                LOG.warning("%s %s: %s; again in %gs (%d/%d)", method, url, last, delay,
                            attempt, self.retries)
                self.sleep(delay)
                delay *= 2
        raise ApiError(f"{method} {url}: {last}, {self.retries} times")

    def events(self, since: str, state: str, limit: int = 100) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"kind": "job", "state": state, "recursive": "true",
                                        "limit": limit, "from": since})
        found = self.request("GET", f"{self.base}/events?{query}")
        return [e for e in found or [] if isinstance(e, dict)] if isinstance(found, list) \
            else []

    def node(self, node_id: str) -> dict[str, Any]:
        found = self.request("GET", f"{self.base}/node/{check_node_id(node_id)}")
        return found if isinstance(found, dict) else {}


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _event_data(event: dict[str, Any]) -> dict[str, Any]:
    node = _dict(event.get("node"))
    for data in (node.get("data"), _dict(event.get("data")).get("data")):
        if isinstance(data, dict) and data.get("runtime"):
            return data
    return {}


@dataclass(frozen=True)
class Limits:
    download: int = fetch.DOWNLOAD_CAP
    unpacked: int = fetch.UNPACKED_CAP
    allow_unverified: bool = False
    insecure_http: bool = False


@dataclass
class Lab:
    api: Api
    runtime: str
    lane: str
    workdir: Path
    callback_tokens: dict[str, str] = field(default_factory=dict)
    poll_s: float = 30.0
    state: str = "available"
    callback_format: str = "pull_labs"
    limits: Limits = Limits()
    _child: subprocess.Popen[bytes] | None = None
    _stop: str = ""

    def __post_init__(self) -> None:
        private_dir(self.workdir)
        private_dir(self.workdir / "taken")

    # --- the loop -----------------------------------------------------------------------

    def serve(self, once: bool = False, since: str = "1970-01-01T00:00:00.000000") -> int:
        """Poll and run jobs until stopped (or, with `once`, until one job ran). Returns the
        exit status: 0, or 130 when interrupted."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stop:
                events = self.api.events(since, self.state)
                if events:
                    since = str(events[-1].get("timestamp", since))
                ran = False
                for event in events:
                    if self._stop or (ran and once):
                        break
                    ran = self._take(event) or ran
                if once and (ran or not events):
                    LOG.info("%s", "one job run" if ran else
                             f"no job for runtime {self.runtime}")
                    break
                if not ran:
                    self._sleep(self.poll_s)
            return 130 if self._stop else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop = signal.Signals(signum).name
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGINT)  # pytest tears its VMs down

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop and time.monotonic() < deadline:
            time.sleep(min(0.5, deadline - time.monotonic()))

    def _mark_taken(self, node_id: str) -> bool:
        """Record the job in the ledger before anything runs; False if it was already."""
        try:
            fd = os.open(self.workdir / "taken" / node_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                         0o600)
        except FileExistsError:
            return False
        os.write(fd, f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
        os.close(fd)
        return True

    def _take(self, event: dict[str, Any]) -> bool:
        """Run the job of `event` if it is this runtime's and not yet run; True if it ran."""
        node = _dict(event.get("node"))
        url = _dict(node.get("artifacts")).get("job_definition")
        if not isinstance(url, str) or _event_data(event).get("runtime") != self.runtime:
            return False
        try:
            node_id = check_node_id(node.get("id"))
        except JobError as exc:
            LOG.error("an event for runtime %s: %s; left alone", self.runtime, exc)
            return False
        if not self._mark_taken(node_id):
            LOG.info("job %s: run already (%s)", node_id, self.workdir / "taken" / node_id)
            return False
        LOG.info("job %s: taken", node_id)
        try:
            check_transport(url, "the job definition", self.limits.insecure_http)
            job = Job.parse(node_id, fetch.json_document(url))
        except (JobError, fetch.FetchError) as exc:
            # no callback is known without a definition, and the job node is not ours to write
            LOG.error("job %s: infrastructure error, not reported (no callback without a "
                      "readable definition): the job definition: %s", node_id, exc)
            return True
        self._post(job, self.run(job, node.get("parent")))
        return True

    # --- one job ------------------------------------------------------------------------

    def run(self, job: Job, parent: object = None) -> Outcome:
        """Fetch, check and run `job`; every way it cannot reach a verdict is infra."""
        jobdir = self.workdir / f"job-{job.node_id}"
        private_dir(jobdir, fresh=True)
        try:
            files = {name: self._fetch(job, name, url, jobdir)
                     for name, url in job.artifacts.items()}
            config, config_from = self._config(job, parent, files["kernel"], jobdir)
            modules = fetch.unpack_modules(files["modules"], jobdir / "modules",
                                           self.limits.unpacked) if "modules" in files else None
        except (JobError, fetch.FetchError, ApiError) as exc:
            return infra(str(exc))
        LOG.info("job %s: kernel config from %s", job.node_id, config_from)
        argv = [sys.executable, "-m", "pytest", *job.selection, "--lane", self.lane,
                "--kernel", str(files["kernel"]), "--kernel-config", str(config),
                "--results", str(jobdir / "results"), "-p", "no:cacheprovider", "-rs",
                *(["--modules", str(modules)] if modules else [])]
        result = self._pytest(job, argv, jobdir / "pytest.log")
        result.config_from = config_from
        result.system = job.platform or self.runtime
        return result

    def _pytest(self, job: Job, argv: list[str], log: Path) -> Outcome:
        LOG.info("job %s: %s", job.node_id, " ".join(argv[3:]))
        timed_out = False
        with log.open("wb") as out:
            # its own session: a Ctrl-C reaches the lab, which passes it on (_on_signal)
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            self._child = child
            try:
                rc: int | None = child.wait(timeout=job.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                child.send_signal(signal.SIGINT)
                rc = self._finish(child)
            finally:
                self._child = None
        text = _tail(log)
        tail = text[-1500:].decode(errors="replace")
        if self._stop:
            return infra(f"the lab was stopped ({self._stop}) while the job ran", log=text)
        if timed_out:
            return infra(f"pytest did not finish in {job.timeout_s:g}s; its log ends:\n{tail}",
                         log=text)
        if rc not in (0, 1):  # 2 interrupted, 3 internal error, 4 usage error, 5 no tests
            return infra(f"pytest exited {rc} (not a test verdict); its log ends:\n{tail}",
                         log=text)
        try:
            return outcome(load_results(log.parent / "results"), text)
        except ResultsError as exc:
            return infra(f"no results from the run: {exc}", log=text)

    def _finish(self, child: subprocess.Popen[bytes]) -> int | None:
        """Wait for an interrupted pytest to shut its VMs down; kill it if it will not."""
        try:
            return child.wait(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()  # its QEMUs die with it (PR_SET_PDEATHSIG)
            child.wait()
            return None

    def _fetch(self, job: Job, name: str, url: str, jobdir: Path,
               digest: str | None = None) -> Path:
        """An artifact into artifacts/NAME/ (two URLs may end alike), checked against the
        job's sha256, which it must have unless allow_unverified."""
        check_transport(url, f"the {name} artifact", self.limits.insecure_http)
        want = digest or job.sha256.get(name)
        if want is None and not self.limits.allow_unverified:
            raise JobError(f"the job gives no sha256 for its {name} artifact "
                           f"(integrity.sha256.{name}); the lab boots only what it can check "
                           "(--allow-unverified runs it anyway)")
        base = PurePosixPath(urllib.parse.urlsplit(url).path).name
        dest = jobdir / "artifacts" / name / (base if base not in ("", ".", "..") else name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        got = fetch.download(url, dest, self.limits.download, f"the {name} artifact")
        if want is not None and got != want:
            raise JobError(f"the {name} artifact {url} has sha256 {got}, the job says {want}: "
                           "not what the job means")
        if want is None:
            LOG.warning("job %s: the %s artifact is unverified (sha256 %s)", job.node_id, name,
                        got)
        return dest

    def _config(self, job: Job, parent: object, kernel: Path, jobdir: Path
                ) -> tuple[Path, str]:
        """The kernel config, which a pull-lab job does not carry: the parent kbuild node's
        `.config` artifact, else the one built into the image (CONFIG_IKCONFIG)."""
        tried = []
        if isinstance(parent, str) and parent:
            try:
                artifacts = self.api.node(parent).get("artifacts") or {}
            except (ApiError, urllib.error.HTTPError) as exc:
                artifacts = {}
                tried.append(f"kbuild node {parent}: {exc}")
            url = artifacts.get(CONFIG_ARTIFACT) if isinstance(artifacts, dict) else None
            if isinstance(url, str):
                path = self._fetch(job, "config", url, jobdir)
                return path, f"kbuild node {parent} ({CONFIG_ARTIFACT}: {url})"
            tried.append(f"kbuild node {parent} has no {CONFIG_ARTIFACT} artifact")
        else:
            tried.append("the job node names no parent kbuild node")
        dest = jobdir / "artifacts" / "config" / "ikconfig"
        text = fetch.ikconfig(kernel)
        if text is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(text)
            return dest, "the kernel image (CONFIG_IKCONFIG)"
        tried.append("the kernel image has no CONFIG_IKCONFIG")
        raise JobError("the kernel config is unknown: " + "; ".join(tried)
                       + " (cocolab gates its tests on it)")

    # --- results ------------------------------------------------------------------------

    def _post(self, job: Job, result: Outcome) -> None:
        where = self.workdir / f"job-{job.node_id}"
        body = result.body(self.callback_format)
        (where / "callback.json").write_text(json.dumps(body, indent=1) + "\n")
        said = f"{result.result}" + (f" ({result.error.splitlines()[0]})" if result.error else "")
        token = self.callback_tokens.get(job.token_name)
        if token is None:
            LOG.error("job %s: %s; not posted: no --callback-token %s=FILE (the token its "
                      "callback names); the body is in %s", job.node_id, said, job.token_name,
                      where / "callback.json")
            return
        try:
            check_transport(job.callback_url, "the callback", self.limits.insecure_http)
            self.api.request("POST", job.callback_url, body, token=token)
            LOG.info("job %s: %s, posted to %s", job.node_id, said, job.callback_url)
        except (JobError, ApiError, urllib.error.HTTPError) as exc:
            LOG.error("job %s: %s; the results could not be posted: %s; the body is in %s",
                      job.node_id, said, exc, where / "callback.json")


def _tail(log: Path) -> bytes:
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - LOG_TAIL))
        return f.read()


def read_tokens(pairs: list[str]) -> dict[str, str]:
    """--callback-token NAME=FILE, repeatable: each token's value from its file."""
    tokens = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--callback-token {pair!r}: give NAME=FILE (the token_name a "
                              "job's callback names, and the file holding its token)")
        try:
            tokens[name] = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--callback-token {pair}: {exc.strerror}") from None
    return tokens


def read_token(path: Path | None) -> str:
    if path is None:
        return os.environ.get("COCOLAB_LAB_TOKEN", "")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror}") from None
