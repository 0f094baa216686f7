"""A stand-in for KernelCI, on loopback, started by a test: the API, its storage and the
pipeline's callback service, behaving as their own code does (read in kernelci-api,
kernelci-core and kernelci-pipeline; written here from that reading):

- the API's events (`GET /latest/events?kind=job&state=S&from=T`) list job nodes in state S;
  the scheduler leaves a pull-lab job `available`;
- a node write (`PUT`/`POST /latest/node/ID`) is refused 401: only a node's owner may update
  it, and the lab owns none; and were it the owner, `available -> running` would be 400 (the
  transition table of kernelci-core api/models.py);
- storage (`/storage/...`) serves job definitions (the template's fields, no config) and
  artifacts to anyone; the kbuild node (`GET /latest/node/ID`) names its `.config` as
  `_config`;
- the callback (`POST /callback/node/ID`) wants the callback token verbatim in
  Authorization, answers 202 and keeps the body.

Every request is recorded with the Authorization it carried, for the test to assert on.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API_TOKEN = "api-secret"
CALLBACK_TOKEN = "callback-secret"
TOKEN_NAME = "kernelci-pipeline-callback"

TRANSITIONS = {"running": ["available", "closing", "done"], "available": ["closing", "done"],
               "closing": ["done"], "done": []}
"""kernelci-core api/models.py Node.validate_node_state_transition."""


def node_id(n: int) -> str:
    return f"{n:024x}"


@dataclass
class StandIn:
    files: dict[str, Path] = field(default_factory=dict)
    """Artifacts served under /storage/artifacts/NAME."""
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What each job's callback received."""
    node_writes: list[str] = field(default_factory=list)
    """Every attempt to write a node (all refused)."""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, Authorization) of every request."""
    fail_next: int = 0
    """Answer this many requests 503, to exercise the lab's retries."""

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                standin._answer(self, "GET")

            def do_PUT(self) -> None:
                standin._answer(self, "PUT")

            def do_POST(self) -> None:
                standin._answer(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def api(self) -> str:
        return f"{self.url}/latest"

    def artifact(self, name: str, path: Path) -> tuple[str, str]:
        """Serve `path` as artifact `name`: its URL and sha256."""
        self.files[name] = path
        return (f"{self.url}/storage/artifacts/{name}",
                hashlib.sha256(path.read_bytes()).hexdigest())

    def add_job(self, job_id: str, definition: dict[str, Any], runtime: str,
                state: str = "available", parent: str | None = None) -> None:
        """A job node in `state` (the scheduler's for pull labs: available), its definition
        in storage, and the event announcing it; `parent` its kbuild node."""
        definition.setdefault("callback", {"url": f"{self.url}/callback/node/{job_id}",
                                           "token_name": TOKEN_NAME})
        self.jobs[job_id] = definition
        node = {"id": job_id, "kind": "job", "name": "cocolab-devmem", "group": "pull-labs",
                "state": state, "owner": "pipeline", "parent": parent,
                "artifacts": {"job_definition": f"{self.url}/storage/jobs/{job_id}.json"},
                "data": {"runtime": runtime, "platform": "qemu-x86_64"}}
        self.nodes[job_id] = node
        self.events.append({"timestamp": f"2026-12-03T00:00:{len(self.events):02d}.000000",
                            "node": node, "data": {"data": node["data"]}})

    def add_kbuild(self, kbuild_id: str, config: Path | None) -> None:
        artifacts = {"kernel": f"{self.url}/storage/artifacts/bzImage"}
        if config is not None:
            artifacts["_config"] = self.artifact(f"{kbuild_id}-config", config)[0]
        self.nodes[kbuild_id] = {"id": kbuild_id, "kind": "kbuild", "state": "done",
                                 "owner": "pipeline", "artifacts": artifacts}

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        auth = h.headers.get("Authorization")
        self.requests.append((method, url.path, auth))
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._send(h, 503, {"detail": "busy"})
        body: Any = None
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            body = json.loads(h.rfile.read(length))
        parts = url.path.strip("/").split("/")
        if method == "GET" and url.path == "/latest/events":
            query = urllib.parse.parse_qs(url.query)
            since, state = query.get("from", [""])[0], query.get("state", [""])[0]
            return self._send(h, 200, [e for e in self.events if e["timestamp"] > since
                                       and self.nodes[e["node"]["id"]]["state"] == state])
        if parts[:2] == ["latest", "node"] and len(parts) == 3:
            return self._node(h, method, parts[2], auth, body)
        if method == "GET" and parts[:2] == ["storage", "jobs"]:
            return self._send(h, 200, self.jobs[parts[2].removesuffix(".json")])
        if method == "GET" and parts[:2] == ["storage", "artifacts"] and parts[2] in self.files:
            data = self.files[parts[2]].read_bytes()
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return None
        if method == "POST" and parts[:2] == ["callback", "node"]:
            if auth != CALLBACK_TOKEN:  # src/lava_callback.py: the token value, verbatim
                return self._send(h, 401, {"message": "Unauthorized"})
            self.results[parts[2]] = body
            return self._send(h, 202, {"message": "OK"})
        return self._send(h, 404, {"detail": f"no {method} {url.path}"})

    def _node(self, h: BaseHTTPRequestHandler, method: str, nid: str, auth: str | None,
              body: Any) -> None:
        if nid not in self.nodes:
            return self._send(h, 404, {"detail": f"node {nid} not found"})
        if method == "GET":
            return self._send(h, 200, self.nodes[nid])
        self.node_writes.append(f"{method} {nid} {json.dumps(body)[:200]}")
        if auth != API_TOKEN:
            return self._send(h, 401, {"detail": "Unauthorized"})
        # the lab's token is a user's, not the node's owner (kernelci-api: owner-only updates)
        state = self.nodes[nid]["state"]
        wanted = (body or {}).get("state", state)
        if wanted != state and wanted not in TRANSITIONS[state]:
            return self._send(h, 400, {"detail": f"Transition not allowed with state: {wanted}"})
        return self._send(h, 401, {"detail": "Unauthorized: not the node's owner"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def definition(kernel: tuple[str, str], selection: str = "tests/devmem",
               modules: tuple[str, str] | None = None,
               sha_override: dict[str, str] | None = None,
               timeout_s: float = 1800) -> dict[str, Any]:
    """A PULL_LABS job definition as kernelci-core's pull_labs.jinja2 renders one: no config
    artifact, `parameters` a string, integrity.sha256 when checksums are known."""
    artifacts = {"kernel": kernel[0]}
    sums = {"kernel": kernel[1]}
    if modules:
        artifacts["modules"], sums["modules"] = modules
    sums.update(sha_override or {})
    return {"artifacts": artifacts,
            "tests": [{"id": "cocolab-1", "type": "cocolab", "depends": [],
                       "timeout_s": timeout_s, "parameters": selection, "pre-commands": [],
                       "post-commands": []}],
            "environment": {"platform": "qemu-x86_64", "arch": "x86_64",
                            "console": {"method": "serial", "baud": 115200}},
            "integrity": {"sha256": sums}}
