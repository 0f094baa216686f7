"""An in-process SSH server on 127.0.0.1 for the SSH client's unit tests (no QEMU).

`AcceptingSshd` accepts any public key and any session; a test's subclass decides what an
exec does. `serve()` answers connections on a listener with a fresh server object each.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class AcceptingSshd(paramiko.ServerInterface):
    """Accepts any public key and any session channel."""

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


class Sshd(AcceptingSshd):
    """Runs each exec as dropbear does, with `shell -c COMMAND` (in `env`, if given), and
    logs the commands."""

    def __init__(self, shell: list[str], log: list[str], env: dict[str, str] | None = None):
        self.shell, self.log, self.env = shell, log, env

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.log.append(command.decode())
        proc = subprocess.Popen([*self.shell, "-c", command.decode()], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env=self.env)
        threading.Thread(target=self._pump, args=(channel, proc), daemon=True).start()
        return True

    @staticmethod
    def _pump(channel: paramiko.Channel, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

        def feed() -> None:
            with contextlib.suppress(OSError):  # the shell is gone (killed by a test)
                while data := channel.recv(65536):
                    stdin.write(data)
                    stdin.flush()
                stdin.close()

        def drain(src, send) -> None:  # type: ignore[no-untyped-def]
            with contextlib.suppress(EOFError, OSError):  # the client hung up (a timeout)
                while data := src.read1(65536):
                    send(data)

        threads = [threading.Thread(target=feed, daemon=True),
                   threading.Thread(target=drain, args=(stdout, channel.sendall)),
                   threading.Thread(target=drain, args=(stderr, channel.sendall_stderr))]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        rc = proc.wait()
        stdout.close()
        stderr.close()
        # EOF and the status, and the client closes: paramiko answers the exec request after
        # check_channel_exec_request() returns, and a close sent before that answer (a quick
        # `exit 7`) failed the client's exec with "Channel closed", 1 run in 12
        with contextlib.suppress(EOFError, OSError):
            channel.shutdown_write()
            channel.send_exit_status(rc if rc >= 0 else 128 - rc)  # as a shell says a signal


def ed25519(path: Path) -> paramiko.Ed25519Key:
    """A new Ed25519 key, written to `path` in OpenSSH format."""
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def serve(host_key: paramiko.PKey, server: Callable[[], paramiko.ServerInterface],
          channels: int = 16) -> socket.socket:
    """A listener on 127.0.0.1 whose connections are served, each by a new `server()`, in
    daemon threads; close it to stop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            try:
                transport.start_server(server=server())
            except (paramiko.SSHException, OSError):
                continue  # a client that hung up mid-handshake (the host-key test's does)
            threading.Thread(target=lambda t=transport: [t.accept(5) for _ in range(channels)],
                             daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def pinned(key: paramiko.PKey) -> str:
    """The key as the OpenSSH public-key line SSH pins."""
    return f"{key.get_name()} {key.get_base64()}"
