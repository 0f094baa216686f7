"""SSH.start against an in-process paramiko server whose sshd refuses an exec (no QEMU)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paramiko
import pytest
from fake_sshd import AcceptingSshd, ed25519, pinned, serve

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError
from cocolab.vm.ssh import SSH


class Sshd(AcceptingSshd):
    """Runs nothing: refuses the first `refusals` exec requests (as dropbear does when it
    cannot start a command), then answers each exec with exit status 0."""

    def __init__(self, refusals: int, log: list[str]):
        self.refusals, self.log = refusals, log

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


@pytest.fixture
def server(tmp_path: Path):
    client_key = tmp_path / "id"
    ed25519(client_key)
    host_key = ed25519(tmp_path / "host")
    log: list[str] = []
    state = {"refusals": 0}

    def sshd() -> Sshd:
        refusals, state["refusals"] = state["refusals"], 0  # only the first connection refuses
        return Sshd(refusals, log)

    listener = serve(host_key, sshd, channels=8)
    yield listener.getsockname()[1], client_key, pinned(host_key), log, state
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
    other = ed25519(tmp_path / "other")
    ssh = SSH(port, key, pinned(other))
    start = time.monotonic()
    with pytest.raises(GuestCommandError, match=r"on 127\.0\.0\.1:\d+ is not this guest: its host "
                                                 r"key is ssh-ed25519 SHA256:"):
        ssh.connect(Deadline(60))
    assert time.monotonic() - start < 30  # said at once, not retried until the deadline
    assert log == []
