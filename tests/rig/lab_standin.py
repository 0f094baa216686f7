"""A stand-in for the KernelCI API a pull lab talks to, on loopback, started by a test.

It speaks what `cocolab lab` reads and writes (framework/cocolab/lab/agent.py): job events,
job definitions in the PULL_LABS form, artifacts, the claim of a job node, and the callback
that receives the results; and it records every request, for the test to assert on.
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

TOKEN = "lab-secret"


@dataclass
class StandIn:
    files: dict[str, Path] = field(default_factory=dict)
    """Artifacts served under /artifacts/NAME."""
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    claims: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What each job's callback received."""
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
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
        return f"{self.url}/artifacts/{name}", hashlib.sha256(path.read_bytes()).hexdigest()

    def add_job(self, node_id: str, definition: dict[str, Any], runtime: str) -> None:
        definition.setdefault("callback", {"url": f"{self.url}/callback/node/{node_id}",
                                           "token_name": "cocolab-lab"})
        self.jobs[node_id] = definition
        self.events.append({
            "timestamp": f"2026-12-03T00:00:{len(self.events):02d}.000000",
            "node": {"id": node_id, "kind": "job", "group": "pull-labs",
                     "artifacts": {"job_definition": f"{self.url}/jobs/{node_id}.json"},
                     "data": {"runtime": runtime, "platform": "qemu-x86_64"}}})

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlparse(h.path)
        self.requests.append(f"{method} {url.path}")
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._send(h, 503, {"detail": "busy"})
        body: Any = None
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            body = json.loads(h.rfile.read(length))
        parts = url.path.strip("/").split("/")
        if method == "GET" and url.path == "/latest/events":
            since = urllib.parse.parse_qs(url.query).get("from", [""])[0]
            return self._send(h, 200, [e for e in self.events if e["timestamp"] > since])
        if method == "GET" and parts[0] == "jobs":
            return self._send(h, 200, self.jobs[parts[1].removesuffix(".json")])
        if method == "GET" and parts[0] == "artifacts" and parts[1] in self.files:
            data = self.files[parts[1]].read_bytes()
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return None
        if h.headers.get("Authorization") != TOKEN:
            return self._send(h, 401, {"detail": "no or wrong token"})
        if method == "PUT" and parts[:2] == ["latest", "node"]:
            node_id = parts[2]
            if body.get("state") == "running":
                if node_id in self.claims:
                    return self._send(h, 409, {"detail": f"claimed by {self.claims[node_id]}"})
                self.claims[node_id] = body["data"]["lab"]
            else:
                self.updates[node_id] = body
            return self._send(h, 200, {"id": node_id})
        if method == "POST" and parts[:2] == ["callback", "node"]:
            self.results[parts[2]] = body
            return self._send(h, 200, {})
        return self._send(h, 404, {"detail": f"no {method} {url.path}"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def definition(kernel: tuple[str, str], config: tuple[str, str],
               selection: str = "tests/devmem", modules: tuple[str, str] | None = None,
               sha_override: dict[str, str] | None = None,
               timeout_s: int = 1800) -> dict[str, Any]:
    """A PULL_LABS job definition, as kernelci-core's pull_labs.jinja2 renders one."""
    artifacts = {"kernel": kernel[0], "config": config[0]}
    sums = {"kernel": kernel[1], "config": config[1]}
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
