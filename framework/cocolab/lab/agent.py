"""`cocolab lab`: a KernelCI pull lab. It polls the API for jobs, claims one addressed to its
runtime, fetches the kernel it names (checking the sha256 the job gives), runs the selection
on this host's lane with pytest, and posts the results back as nodes; then polls again.

    events   GET  API/events?kind=job&state=done&recursive=true&limit=N&from=T
             (as kernelci-pipeline's tools/example_pull_lab*.py read them: each event's node
             names its job definition in artifacts.job_definition, its runtime in data)
    claim    PUT  API/node/ID {"state": "running", "data": {"lab": RUNTIME}}
             (cocolab's step where the published protocol is silent: a 409 means another lab
             took it; labs that share a runtime never run a job twice)
    results  POST <the job's callback url> {"node": JOB NODE, "nodes": [CHILD NODES]}
             with the token the job's callback names, from --token-file

API calls are retried with backoff (RETRIES, doubling from BACKOFF_S); a job that cannot run
is reported as an infrastructure error (lab/job.py), never as a kernel failure. The pytest
run is a child process: on SIGINT or SIGTERM the lab interrupts it (pytest shuts its VMs
down; QEMU dies with its parent anyway, host/process.py), reports the job as interrupted,
and exits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cocolab.errors import CocolabError
from cocolab.lab.job import Job, JobError, Outcome, infra, outcome
from cocolab.results import ResultsError
from cocolab.results import load as load_results

LOG = logging.getLogger(__name__)

RETRIES = 5
BACKOFF_S = 1.0
HTTP_TIMEOUT_S = 60.0
INTERRUPT_GRACE_S = 30.0
"""How long pytest gets to shut its VMs down after SIGINT before it is killed."""


class ApiError(CocolabError):
    """The API did not answer usefully, RETRIES times."""


class Claimed(Exception):
    """Another lab claimed the job first."""


@dataclass
class Api:
    base: str
    token: str
    retries: int = RETRIES
    backoff_s: float = BACKOFF_S
    sleep: Callable[[float], None] = time.sleep

    def request(self, method: str, url: str, body: object = None) -> Any:
        """JSON in, JSON out, retried with backoff on a lost connection or a 5xx; a 4xx is
        the answer (raised as HTTPError at once)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "Authorization": self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay, last = self.backoff_s, ""
        for attempt in range(1, self.retries + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                    text = resp.read()
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

    def events(self, since: str, limit: int = 100) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"kind": "job", "state": "done", "recursive": "true",
                                        "limit": limit, "from": since})
        found = self.request("GET", f"{self.base}/events?{query}")
        return [e for e in found or [] if isinstance(e, dict)]

    def claim(self, node_id: str, runtime: str) -> None:
        try:
            self.request("PUT", f"{self.base}/node/{urllib.parse.quote(node_id)}",
                         {"state": "running", "data": {"lab": runtime}})
        except urllib.error.HTTPError as exc:
            if exc.code == 409:
                raise Claimed(node_id) from None
            raise ApiError(f"claiming job {node_id}: HTTP {exc.code} {exc.reason}") from None


def _runtime(event: dict[str, Any]) -> str:
    node = event.get("node") or {}
    for data in (node.get("data"), (event.get("data") or {}).get("data")):
        if isinstance(data, dict) and data.get("runtime"):
            return str(data["runtime"])
    return ""


@dataclass
class Lab:
    api: Api
    runtime: str
    lane: str
    workdir: Path
    poll_s: float = 30.0
    _child: subprocess.Popen[bytes] | None = None
    _stop: str = ""

    # --- the loop -----------------------------------------------------------------------

    def serve(self, once: bool = False, since: str = "1970-01-01T00:00:00.000000") -> int:
        """Poll and run jobs until stopped (or, with `once`, until one job ran). Returns the
        exit status: 0, or 130 when interrupted."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stop:
                events = self.api.events(since)
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

    def _take(self, event: dict[str, Any]) -> bool:
        """Claim and run the job of `event` if it is ours; True if it ran."""
        node = event.get("node") or {}
        url = (node.get("artifacts") or {}).get("job_definition")
        node_id = str(node.get("id", ""))
        if not url or not node_id or _runtime(event) != self.runtime:
            return False
        try:
            self.api.claim(node_id, self.runtime)
        except Claimed:
            LOG.info("job %s: claimed by another lab", node_id)
            return False
        LOG.info("job %s: claimed", node_id)
        try:
            job = Job.parse(node_id, self.api.request("GET", url))
        except (JobError, ApiError, urllib.error.HTTPError) as exc:
            self._post_to_api(node_id, infra(f"the job definition: {exc}"))
            return True
        self._post(job, self.run(job))
        return True

    # --- one job ------------------------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        """Fetch, check and run `job`; every way it cannot reach a verdict is infra."""
        jobdir = self.workdir / f"job-{job.node_id}"
        shutil.rmtree(jobdir, ignore_errors=True)
        jobdir.mkdir(parents=True)
        try:
            files = {name: self._fetch(job, name, jobdir) for name in job.artifacts}
            modules = self._unpack_modules(files["modules"], jobdir) \
                if "modules" in files else None
        except JobError as exc:
            return infra(str(exc))
        argv = [sys.executable, "-m", "pytest", *job.selection, "--lane", self.lane,
                "--kernel", str(files["kernel"]), "--kernel-config", str(files["config"]),
                "--results", str(jobdir / "results"), "-p", "no:cacheprovider", "-rs",
                *(["--modules", str(modules)] if modules else [])]
        LOG.info("job %s: %s", job.node_id, " ".join(argv[3:]))
        log = jobdir / "pytest.log"
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
        tail = log.read_text(errors="replace")[-1500:]
        if self._stop:
            return infra(f"the lab was stopped ({self._stop}) while the job ran")
        if timed_out:
            return infra(f"pytest did not finish in {job.timeout_s:g}s; its log ends:\n{tail}")
        if rc not in (0, 1):  # 2 interrupted, 3 internal error, 4 usage error, 5 no tests
            return infra(f"pytest exited {rc} (not a test verdict); its log ends:\n{tail}")
        try:
            return outcome(load_results(jobdir / "results"))
        except ResultsError as exc:
            return infra(f"no results from the run: {exc}")

    def _finish(self, child: subprocess.Popen[bytes]) -> int | None:
        """Wait for an interrupted pytest to shut its VMs down; kill it if it will not."""
        try:
            return child.wait(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()  # its QEMUs die with it (PR_SET_PDEATHSIG)
            child.wait()
            return None

    def _fetch(self, job: Job, name: str, jobdir: Path) -> Path:
        url = job.artifacts[name]  # artifacts/kernel/bzImage: two URLs may end alike
        base = PurePosixPath(urllib.parse.urlparse(url).path).name
        dest = jobdir / "artifacts" / name / (base if base not in ("", ".", "..") else name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp, \
                    dest.open("wb") as f:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise JobError(f"downloading the {name} artifact {url}: "
                           f"{getattr(exc, 'reason', exc)}") from None
        want = job.sha256.get(name)
        if want is not None and digest.hexdigest() != want.lower():
            raise JobError(f"the {name} artifact {url} has sha256 {digest.hexdigest()}, the "
                           f"job says {want}: not the kernel the job means")
        return dest

    def _unpack_modules(self, archive: Path, jobdir: Path) -> Path:
        """A modules tarball (lib/modules/RELEASE/...) unpacked; the dir --modules takes."""
        dest = jobdir / "modules"
        try:
            with tarfile.open(archive) as tar:
                members, links = _files_and_dirs(tar, dest, archive.name)
                tar.extractall(dest, members=members)
        except (tarfile.TarError, OSError) as exc:
            raise JobError(f"the modules artifact {archive.name}: {exc}") from None
        if links:
            LOG.info("modules artifact %s: %d link(s) left out (%s): modprobe needs none",
                     archive.name, len(links), ", ".join(links[:3]))
        if not any((dest / "lib/modules").glob("*/modules.dep")):
            raise JobError(f"the modules artifact {archive.name} holds no "
                           "lib/modules/RELEASE/modules.dep")
        return dest

    # --- results ------------------------------------------------------------------------

    def _post(self, job: Job, result: Outcome) -> None:
        body = {"node": result.job_node(), "nodes": result.nodes}
        try:
            self.api.request("POST", job.callback_url, body)
            LOG.info("job %s: %s%s, %d nodes posted", job.node_id, result.result,
                     f" ({result.error.splitlines()[0]})" if result.error else "",
                     len(result.nodes))
        except (ApiError, urllib.error.HTTPError) as exc:
            LOG.error("job %s: the results could not be posted: %s; they stay in %s",
                      job.node_id, exc, self.workdir / f"job-{job.node_id}")

    def _post_to_api(self, node_id: str, result: Outcome) -> None:
        """A job whose definition could not be read has no callback: update its node."""
        try:
            self.api.request("PUT", f"{self.api.base}/node/{urllib.parse.quote(node_id)}",
                             result.job_node())
        except (ApiError, urllib.error.HTTPError) as exc:
            LOG.error("job %s: could not report %s: %s", node_id, result.error, exc)


def _files_and_dirs(tar: tarfile.TarFile, dest: Path, name: str
                    ) -> tuple[list[tarfile.TarInfo], list[str]]:
    """The archive's files and directories, and the names of its links, which are left out:
    `make modules_install` links `build` to the tree it built in, which is not here, and
    with no links made, no name can be led outside `dest` through one. A name that is
    absolute or climbs (`..`), or a member that is neither file, directory nor link,
    refuses the archive (JobError). Checked here because tarfile's "data" filter, which does
    this, came in Python 3.11.4, after Debian 12's 3.11.2."""
    root = dest.resolve()
    members, links = [], []
    for m in tar.getmembers():
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts or \
                not (root / path).resolve().is_relative_to(root):
            raise JobError(f"the modules artifact {name}: member {m.name!r} would land outside "
                           "the job's directory")
        if m.issym() or m.islnk():
            links.append(m.name)
        elif m.isfile() or m.isdir():
            members.append(m)
        else:
            raise JobError(f"the modules artifact {name}: member {m.name!r} is not a file, "
                           "directory or link")
    return members, links


def read_token(path: Path | None) -> str:
    if path is None:
        return os.environ.get("COCOLAB_LAB_TOKEN", "")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CocolabError(f"--token-file {path}: {exc.strerror}") from None
