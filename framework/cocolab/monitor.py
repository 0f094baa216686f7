"""QEMU's QMP monitor, served from a thread of its own, watching the guest's run state.

One `qemu.qmp.QMPClient` runs on a private asyncio loop in a daemon thread. Any thread may send
it a command (`cmd()`, bounded by a timeout). Meanwhile the loop reads QEMU's events, so a guest
that stops running is known within milliseconds, whatever the test is doing at the time:

    STOP            then `query-status`: internal-error (KVM could not run the vCPU),
                    guest-panicked, io-error, shutdown, or a pause nobody asked for
    SHUTDOWN        the guest powered off or reset (-no-reboot turns a reset into an exit)
    GUEST_PANICKED  a panic reported through a pvpanic device

The first such event is kept in `stopped`; `VM.check_alive()` turns it into a RIG FAILURE.
A pause that cocolab itself makes (saving a snapshot) is announced with `expecting_stop()`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

from cocolab.errors import MonitorError, QMPCommandFailed

LOG = logging.getLogger(__name__)
# qemu.qmp logs a failed handshake at ERROR; cocolab raises it as its own error instead, so
# keep Python's last-resort handler from printing it on stderr (pytest still captures it).
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())

T = TypeVar("T")

RUNNING = frozenset({"running", "prelaunch", "inmigrate"})
"""query-status values of a guest that runs, or has yet to start (-S, -incoming)."""

_WATCHED = frozenset({"STOP", "SHUTDOWN", "GUEST_PANICKED", "RESUME"})


@dataclass(frozen=True)
class RunStop:
    """The guest stopped running: the event QEMU sent and the run state it then reported."""

    event: str
    status: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"QEMU reported {self.event}, run state {self.status}"
        return f"{text} ({self.detail})" if self.detail else text


class Monitor:
    """QMP on an already connected socket. `start()` negotiates, `close()` ends the thread."""

    def __init__(self, sock: socket.socket, name: str = "qmp",
                 on_lost: Callable[[], None] | None = None):
        self._sock = sock
        self._on_lost = on_lost
        """Called when the connection breaks mid-command, before MonitorError is raised: the
        VM raises QEMU's own verdict there (it exited, and said why) when it has one."""
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(name)
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"cocolab-{name}",
                                        daemon=True)
        self._expected = 0
        self._watcher: Future[None] | None = None
        self._idle = asyncio.Event()
        """Set while the watcher waits for an event with none queued."""
        self._lock = threading.Lock()
        self.stopped: RunStop | None = None
        """The first stop nobody asked for; None while the guest runs (or never ran)."""
        self.changed = threading.Event()
        """Set whenever `stopped` is set: waiters may sleep on it instead of polling."""

    def start(self, timeout: float) -> None:
        """Read QEMU's greeting, negotiate, and start watching events."""
        self._thread.start()
        try:
            self._call(self._client.connect(self._sock), timeout)
        except MonitorError:
            raise
        except Exception as exc:  # qemu.qmp wraps OSError/EOFError in ConnectError
            raise MonitorError(f"QMP handshake failed: {exc}") from exc
        self._watcher = asyncio.run_coroutine_threadsafe(self._watch(), self._loop)
        # A guest that stopped before we listened (a vCPU failing at its first instruction)
        # sent its STOP to nobody: ask once.
        self._note("query-status", self.cmd("query-status", timeout=timeout)["status"], {})

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        if not self._thread.is_alive():
            coro.close()
            raise MonitorError("the QMP monitor is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise MonitorError(f"QMP did not answer within {timeout:g}s") from exc
        except ExecuteError:
            raise
        except (QMPError, OSError, EOFError) as exc:  # the connection went away mid-command
            if self._on_lost is not None:
                self._on_lost()
            raise MonitorError(f"QMP connection lost: {type(exc).__name__}: {exc}") from exc

    def cmd(self, name: str, args: dict[str, object] | None = None, *,
            timeout: float = 10.0) -> Any:
        """Run one QMP command and return its result. QEMU's refusal is QMPCommandFailed,
        no answer in `timeout` MonitorError: both VMErrors, so a RIG FAILURE in a test body."""
        try:
            result = self._call(self._client.execute(name, args), timeout)
        except ExecuteError as exc:
            raise QMPCommandFailed(name, exc.error_class, str(exc)) from exc
        # QEMU sends a command's events (a `stop` makes STOP) before its reply: once they are
        # noted, a caller's next liveness check sees what its own command did.
        self._call(self._settle(), timeout)
        return result

    async def _settle(self) -> None:
        while not (self._client.events.empty() and self._idle.is_set()):
            await asyncio.sleep(0.005)

    @contextmanager
    def expecting_stop(self) -> Iterator[None]:
        """Within this block a pause (STOP, then RESUME) is cocolab's own doing, not a failure."""
        with self._lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._lock:
                self._expected -= 1

    async def _watch(self) -> None:
        while True:
            if self._client.events.empty():
                self._idle.set()
            event = await self._client.events.get()
            self._idle.clear()
            name = event["event"]
            if name == "SHUTDOWN":
                # no status round trip: the state is known, and under -no-reboot QEMU exits
                # right after saying it, so the question could outlive the answer
                self._note(name, "shutdown", event.get("data", {}))
            elif name in _WATCHED:
                # whether a pause was announced is read as the event is taken, before the
                # status round trip, which may end after the announcing block did
                expected = self._expected > 0
                self._note(name, await self._status(), event.get("data", {}), expected)

    async def _status(self) -> str:
        try:
            reply: Any = await asyncio.wait_for(self._client.execute("query-status"), 2.0)
            return str(reply.get("status", "unknown"))
        except Exception as exc:  # QEMU may be exiting: the event alone is the evidence
            LOG.debug("%s: query-status after an event failed: %s", self._name, exc)
            return "unknown"

    def _note(self, event: str, status: str, data: object, expected: bool = False) -> None:
        with self._lock:
            if status in RUNNING or self.stopped is not None:
                return
            if event == "STOP" and status == "paused" and expected:
                return
            items = data.items() if isinstance(data, dict) else ()
            detail = ", ".join(f"{k}={v}" for k, v in items if isinstance(v, (str, int, bool)))
            self.stopped = RunStop(event, status, detail)
        LOG.info("%s: guest stopped: %s", self._name, self.stopped)
        self.changed.set()

    def close(self) -> None:
        self._on_lost = None  # a goodbye QEMU cannot hear is no verdict on it
        if self._watcher is not None:
            self._watcher.cancel()
        if self._thread.is_alive():
            try:
                self._call(self._client.disconnect(), timeout=2.0)
            except Exception as exc:  # QEMU gone first: nothing left to say goodbye to
                LOG.debug("%s: QMP disconnect: %s", self._name, exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()
        self._sock.close()
