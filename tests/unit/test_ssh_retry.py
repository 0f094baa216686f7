"""SSH.start against an in-process paramiko server whose sshd refuses an exec (no QEMU)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError
from cocolab.vm.ssh import SSH


class Sshd(paramiko.ServerInterface):
    """Accepts the key, runs nothing: refuses the first `refusals` exec requests (as dropbear
    does when it cannot start a command), then answers each exec with exit status 0."""

    def __init__(self, refusals: int, log: list[str]):
        self.refusals, self.log = refusals, log

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.refusals > 0:
            self.refusals -= 1
            self.log.append(f"refused {command.decode()}")
            return False
        self.log.append(f"ran {command.decode()}")
        threading.Thread(target=self._finish, args=(channel,), daemon=True).start()
        return True

    @staticmethod
    def _finish(channel: paramiko.Channel) -> None:
        # as dropbear does: the exec's reply first, exit status, EOF and close after it
        time.sleep(0.05)
        channel.send_exit_status(0)
        channel.shutdown_write()
        channel.close()


def _ed25519(path: Path) -> paramiko.Ed25519Key:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    return paramiko.Ed25519Key.from_private_key_file(str(path))


@pytest.fixture
def server(tmp_path: Path):
    key = Ed25519PrivateKey.generate()
    client_key = tmp_path / "id"
    client_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()))
    host_key = _ed25519(tmp_path / "host")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    log: list[str] = []
    state = {"refusals": 0}

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            try:
                transport.start_server(server=Sshd(state["refusals"], log))
            except (paramiko.SSHException, OSError):
                continue  # a client that hung up mid-handshake (the host-key test's does)
            state["refusals"] = 0  # only the first connection refuses
            threading.Thread(target=lambda t=transport: [t.accept(5) for _ in range(8)],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    pinned = f"{host_key.get_name()} {host_key.get_base64()}"
    yield listener.getsockname()[1], client_key, pinned, log, state
    listener.close()


def test_a_refused_exec_runs_the_command_once_on_a_new_connection(server) -> None:
    port, key, pinned, log, state = server
    state["refusals"] = 1
    ssh = SSH(port, key, pinned)
    ssh.connect(Deadline(10))
    result = ssh.exec("echo hello", timeout=10)
    assert result.returncode == 0
    assert log == ["refused echo hello", "ran echo hello"]  # never ran twice
    assert len(ssh.reconnects) == 1 and "refused to start 'echo hello'" in ssh.reconnects[0]
    ssh.close()


def test_an_exec_that_is_not_refused_needs_no_second_connection(server) -> None:
    port, key, pinned, log, _ = server
    ssh = SSH(port, key, pinned)
    ssh.connect(Deadline(10))
    assert ssh.exec("true", timeout=10).returncode == 0
    assert (log, ssh.reconnects) == (["ran true"], [])
    ssh.close()


def test_a_server_with_another_host_key_is_refused_at_once(server, tmp_path: Path) -> None:
    """The guest's host key is pinned: whatever else answers on the forwarded port is not
    talked to, and that is said at once rather than retried until the boot deadline."""
    port, key, _, log, _ = server
    other = _ed25519(tmp_path / "other")
    ssh = SSH(port, key, f"{other.get_name()} {other.get_base64()}")
    start = time.monotonic()
    with pytest.raises(GuestCommandError, match=r"on 127\.0\.0\.1:\d+ is not this guest: its host "
                                                 r"key is ssh-ed25519 SHA256:"):
        ssh.connect(Deadline(30))
    assert time.monotonic() - start < 5
    assert log == []
