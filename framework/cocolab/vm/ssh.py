"""SSH to the guest with paramiko: commands with exact exit status, stdout and stderr.

A command costs one SSH channel when it has its own (`SSH.exec`): dropbear forks, execs the
shell, and the channel's open, exec, exit-status and close are four round trips through QEMU's
user network, about 96 ms under TCG. `SSH.run` sends it instead to a shell kept running on one
channel (`Session`), which runs it in a subshell: about 13 ms.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import select
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError, present

LOG = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
"""A channel opens in milliseconds; waiting longer means the guest (or dropbear) is stuck."""
KEEPALIVE_S = 5
"""Keepalives keep slirp's and dropbear's view of an idle connection (a test holding a
helper while it sleeps) fresh, and find a dead one."""
RECONNECT_S = 30.0


@dataclass(frozen=True)
class GuestKeys:
    """How cocolab and a guest know each other over SSH (the image carries both halves)."""

    client: Path
    """Private key (OpenSSH format) whose public half the guest authorizes for root."""
    host: str
    """The guest's host key, as an OpenSSH public-key line: the only key SSH accepts."""


class CommandFailed(AssertionError):
    """A guest command exited non-zero where the test required success.

    An AssertionError: the guest answered, so this is the kernel's (or the test's) side.
    """


@dataclass(frozen=True)
class CommandResult:
    command: str
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> CommandResult:
        if self.returncode != 0:
            raise CommandFailed(str(self))
        return self

    def __str__(self) -> str:
        text = f"guest command {self.command!r} exited {self.returncode}"
        if self.stdout.strip():
            text += "\n  stdout: " + self.stdout.strip()[-2000:]
        if self.stderr.strip():
            text += "\n  stderr: " + self.stderr.strip()[-2000:]
        return text


class SSH:
    """One authenticated connection to the guest's dropbear, reused for every command.

    A channel that cannot be opened means no command started, so opening again on a new
    connection is safe whatever the command does: `open_session` does that once, when the
    guest is still alive, and records why in `reconnects`. A failure after a command started
    is never retried here (it may have changed the guest): it is a GuestCommandError.
    """

    def __init__(self, port: int, key_path: Path, host_key: str, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.key_path = key_path
        self.host_key = host_key
        """The guest's host key (an OpenSSH public-key line): any other is refused."""
        self._client: paramiko.SSHClient | None = None
        self._retired: list[paramiko.SSHClient] = []
        """Earlier connections, kept open for the channels (held helpers) still on them."""
        self.reconnects: list[str] = []
        """Why each reconnect was needed: the lost transport's own error."""
        self._session: Session | None = None
        self._session_lock = threading.Lock()

    def connect(self, deadline: Deadline, alive: Callable[[], None] = lambda: None) -> None:
        """Connect, retrying briefly until `deadline`; `alive()` raises if the VM died."""
        key = paramiko.Ed25519Key.from_private_key_file(str(self.key_path))
        kind, blob = self.host_key.split()[:2]
        pinned = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        last: Exception | None = None
        while not deadline.expired():
            alive()
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{self.host}]:{self.port}", kind, pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                timeout = max(min(deadline.remaining(), 10.0), 0.5)
                client.connect(self.host, self.port, username="root", pkey=key,
                               look_for_keys=False, allow_agent=False, timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout)
                present(client.get_transport(), "the SSH transport").set_keepalive(KEEPALIVE_S)
                self._client = client
                return
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise GuestCommandError(
                    f"the SSH server on {self.host}:{self.port} is not this guest: its host "
                    f"key is {exc.key.get_name()} {exc.key.fingerprint}, the image's is "
                    f"{pinned.fingerprint}") from None
            except (paramiko.SSHException, OSError) as exc:
                last = exc
                client.close()
                time.sleep(min(0.2, deadline.remaining()))
        raise GuestCommandError(f"SSH to 127.0.0.1:{self.port} did not answer: {last}")

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise GuestCommandError("SSH is not connected")
        return self._client

    def open_session(self, timeout: float,
                     alive: Callable[[], None] = lambda: None) -> paramiko.Channel:
        """A new session channel; on a lost or refusing connection, one more try on a new
        one if `alive()` says the guest still runs. Raises GuestCommandError."""
        try:
            return self._open(timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            first = _describe(exc, self.client.get_transport())
        return self._open_anew(first, timeout, alive)

    def start(self, command: str, timeout: float,
              alive: Callable[[], None] = lambda: None) -> paramiko.Channel:
        """A channel running `command`. Where the guest's sshd refused to start it (it
        answers the exec request with CHANNEL_FAILURE, and paramiko closes the channel: "Channel
        closed."), the command never ran, so it is started once more on a new connection;
        seen twice in 36 soak suite runs under a CPU hog, both beside a held helper."""
        chan = self.open_session(timeout, alive)
        try:
            chan.exec_command(command)
            return chan
        except paramiko.SSHException as exc:
            transport = chan.get_transport()
            # The command ran only if it said something: an exit status or output. EOF is no
            # such sign: refusing, paramiko closes the channel itself, and the server's EOF
            # and CLOSE in answer may already be in when we look (the soak's run 9 showed it:
            # transport active, 0 channels, no retry). exit_status_ready() is true of any
            # closed channel, so ask for a real status.
            said_anything = chan.exit_status != -1 or chan.recv_ready() \
                or chan.recv_stderr_ready()
            chan.close()
            if transport is None or not transport.is_active() or said_anything:
                raise  # the connection died, or the command ran: it must not run again
            first = f"the guest's sshd refused to start {command!r} ({_describe(exc, None)})"
        chan = self._open_anew(first, timeout, alive)
        try:
            chan.exec_command(command)
        except paramiko.SSHException as exc:
            chan.close()
            raise GuestCommandError(f"{first}, and again on a new connection: "
                                    f"{_describe(exc, chan.get_transport())}") from exc
        return chan

    def _open_anew(self, first: str, timeout: float,
                   alive: Callable[[], None]) -> paramiko.Channel:
        alive()
        self.reconnects.append(first)
        LOG.warning("SSH to 127.0.0.1:%s: %s; connecting again", self.port, first)
        self._retired.append(self.client)
        self._client = None
        self.connect(Deadline(RECONNECT_S), alive)
        try:
            return self._open(timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise GuestCommandError(f"SSH could not open a channel ({first}), nor on a new "
                                    f"connection ({_describe(exc, None)})") from exc

    def _open(self, timeout: float) -> paramiko.Channel:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the SSH transport is closed")
        return transport.open_session(timeout=timeout)

    def run(self, command: str, timeout: float, stdin: bytes | None = None,
            alive: Callable[[], None] = lambda: None) -> CommandResult:
        """`command` run by /bin/sh in the guest: in the session shell, or on a channel of its
        own when it has `stdin` to read or another thread holds the session."""
        if stdin is not None or not self._session_lock.acquire(blocking=False):
            return self.exec(command, timeout, stdin, alive)
        try:
            if self._session is None or not self._session.usable():
                alive()
                try:
                    chan = self.start(Session.COMMAND, min(timeout, OPEN_TIMEOUT_S), alive)
                except (OSError, paramiko.SSHException, EOFError) as exc:
                    alive()
                    raise GuestCommandError(f"SSH failed starting the session shell for "
                                            f"{command!r} (it did not run): "
                                            f"{_describe(exc, None)}") from exc
                self._session = Session(chan)
            session = self._session
            try:
                return session.run(command, timeout, alive)
            except BaseException:
                self._session = None  # mid-command, its state is unknown: never reused
                session.close()
                raise
        finally:
            self._session_lock.release()

    def exec(self, command: str, timeout: float, stdin: bytes | None = None,
             alive: Callable[[], None] = lambda: None) -> CommandResult:
        """`command` on a channel of its own (dropbear's `sh -c`), `stdin` sent and closed."""
        start = time.monotonic()
        deadline = Deadline(timeout)
        alive()  # a channel open to a stopped guest would wait out its whole timeout
        try:
            chan = self.start(command, min(timeout, OPEN_TIMEOUT_S), alive)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            alive()
            raise GuestCommandError(f"SSH failed starting {command!r} (it may have run): "
                                    f"{_describe(exc, None)}") from exc
        try:
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            chan.settimeout(0.2)
            while True:
                alive()
                drained = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    drained = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    drained = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if deadline.expired():
                    raise GuestCommandError(f"guest command timed out after {timeout}s: "
                                            f"{command}")
                if not drained:
                    select.select([chan], [], [], 0.2)
            rc = chan.recv_exit_status()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            alive()
            raise GuestCommandError(f"SSH failed running {command!r} (it may have run): "
                                    f"{_describe(exc, chan.get_transport())}") from exc
        finally:
            chan.close()  # always: dropbear keeps a channel until both ends closed it
        return CommandResult(command, rc, out.decode(errors="replace"),
                             err.decode(errors="replace"), time.monotonic() - start)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        for client in (*self._retired, *([self._client] if self._client else [])):
            client.close()
        self._retired.clear()
        self._client = None


class Session:
    """A guest shell on one channel, running one command after another.

    Each command is sent as `( eval 'COMMAND' ) </dev/null`, then two markers: the exit status
    after a random per-command mark on stdout, the mark alone on stderr. Quoted as one word, any
    command text (unbalanced quotes, a syntax error, `exit 3`) reaches eval whole and leaves
    the session shell as it was; the subshell keeps each command's cd, variables, traps and
    umask to itself, and stdin is /dev/null as with a channel of its own (whose stdin the
    caller closes). What a command's background job prints after the command ended is logged
    and dropped before the next command, or lands in that command's output if it comes while
    that one runs: a test that starts a job redirects its output (> file).

    A command that times out, or a channel that breaks, ends the session (SSH.run makes a new
    one for the next command): what still runs in it must not answer another command.
    """

    COMMAND = "exec /bin/sh"

    def __init__(self, chan: paramiko.Channel):
        self.chan = chan
        self._stray = bytearray()

    def usable(self) -> bool:
        transport = self.chan.get_transport()
        return not self.chan.closed and transport is not None and transport.is_active() \
            and not self.chan.exit_status_ready()

    def run(self, command: str, timeout: float, alive: Callable[[], None]) -> CommandResult:
        start = time.monotonic()
        deadline = Deadline(timeout)
        self._drain_stray()
        mark = secrets.token_hex(12).encode()
        script = (f"( eval {shlex.quote(command)} ) </dev/null; "
                  f"printf '{mark.decode()} %d\\n' $?; printf '{mark.decode()}' >&2\n")
        out, err = bytearray(), bytearray()
        try:
            self.chan.sendall(script.encode())
            while True:
                alive()
                drained = False
                while self.chan.recv_ready():
                    out += self.chan.recv(65536)
                    drained = True
                while self.chan.recv_stderr_ready():
                    err += self.chan.recv_stderr(65536)
                    drained = True
                end, err_end = out.find(mark + b" "), err.find(mark)
                if end >= 0 and out.find(b"\n", end) >= 0 and err_end >= 0:
                    break
                if self.chan.exit_status_ready() and not drained:
                    raise GuestCommandError(
                        f"the guest's session shell ended (status {self.chan.exit_status}) "
                        f"while running {command!r}, which may have run: "
                        f"stdout {bytes(out[-200:])!r}, stderr {bytes(err[-200:])!r}")
                if deadline.expired():
                    raise GuestCommandError(f"guest command timed out after {timeout}s: "
                                            f"{command}")
                if not drained:
                    select.select([self.chan], [], [], 0.2)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            alive()
            raise GuestCommandError(f"SSH failed running {command!r} (it may have run): "
                                    f"{_describe(exc, self.chan.get_transport())}") from exc
        eol = out.index(b"\n", end)
        rc = int(out[end + len(mark) + 1:eol])
        self._stray = out[eol + 1:] + err[err_end + len(mark):]
        return CommandResult(command, rc, out[:end].decode(errors="replace"),
                             err[:err_end].decode(errors="replace"), time.monotonic() - start)

    def _drain_stray(self) -> None:
        """Bytes that arrived between commands (a background job's) belong to no command."""
        while self.chan.recv_ready():
            self._stray += self.chan.recv(65536)
        while self.chan.recv_stderr_ready():
            self._stray += self.chan.recv_stderr(65536)
        if self._stray:
            LOG.warning("guest output between commands, dropped: %r", bytes(self._stray[:200]))
            self._stray.clear()

    def close(self) -> None:
        # paramiko sends CHANNEL_CLOSE even on a transport whose peer is gone (a VM shut down
        # before its SSH): nothing is left to tell
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self.chan.close()


def _describe(exc: BaseException, transport: paramiko.Transport | None) -> str:
    """The error, and what the transport knew: paramiko's "Unable to open channel." alone
    hides whether the connection was gone (and why) or the server said no."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if transport is not None and not transport.is_active():
        cause = transport.get_exception()
        text += "; the connection was closed" + (f" ({cause!r})" if cause else "")
    return text
