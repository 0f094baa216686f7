"""SSH.run's session shell against an in-process paramiko server whose exec runs a real
/bin/sh on this host (and the guest's busybox ash, when its .deb is cached): no QEMU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fake_sshd import Sshd, ed25519, pinned, serve

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError
from cocolab.vm.ssh import SSH, Session

BUSYBOX = shutil.which("busybox")
"""The guest's shell is busybox's ash (setup.sh installs busybox-static on the host too)."""
SHELLS = {"host sh": ["/bin/sh"], "busybox ash": [BUSYBOX, "sh"] if BUSYBOX else None}


@pytest.fixture(params=list(SHELLS))
def ssh(request: pytest.FixtureRequest, tmp_path: Path):
    shell = SHELLS[request.param]
    if shell is None:
        pytest.skip("no busybox on PATH, the guest's shell: apt-get install busybox-static "
                    "(./setup.sh does)")
    client_key = tmp_path / "id"
    host_key = ed25519(client_key)
    log: list[str] = []
    listener = serve(host_key, lambda: Sshd(shell, log))
    client = SSH(listener.getsockname()[1], client_key, pinned(host_key))
    client.connect(Deadline(10))
    client.log = log  # type: ignore[attr-defined]
    yield client
    client.close()
    listener.close()


def test_commands_share_one_shell_and_none_leaks_state_into_the_next(ssh: SSH) -> None:
    before = ssh.run("pwd; umask; echo \"[$X]\"; trap", 10).stdout
    assert ssh.run("cd / && X=1 && umask 077 && trap 'echo bye' EXIT && echo $X", 10).stdout \
        == "1\nbye\n"
    assert ssh.run("pwd; umask; echo \"[$X]\"; trap", 10).stdout == before
    assert before.endswith("[]\n") and not before.startswith("/\n")
    assert ssh.log == [Session.COMMAND]  # type: ignore[attr-defined]


def test_exit_status_stdout_and_stderr_are_exact(ssh: SSH) -> None:
    result = ssh.run("printf 'no newline'; printf 'err' >&2; exit 3", 10)
    assert (result.returncode, result.stdout, result.stderr) == (3, "no newline", "err")
    result = ssh.run("echo a; echo b >&2; false", 10)
    assert (result.returncode, result.stdout, result.stderr) == (1, "a\n", "b\n")
    big = ssh.run("i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done", 30)
    assert big.stdout.splitlines()[-1] == "line19999" and len(big.stdout.splitlines()) == 20000


@pytest.mark.parametrize("command", ["echo 'unbalanced", "if then fi", "echo ok'\"'\"'s",
                                     "exit 7", "set -e; false; echo not here",
                                     "printf '%s\\n' \"$(printf 'x\\ny')\""])
def test_any_command_text_reaches_the_shell_whole(ssh: SSH, command: str) -> None:
    """What `sh -c COMMAND` on a channel of its own says, the session says: the same status
    and output, and the session shell goes on."""
    alone = ssh.exec(command, 10)
    in_session = ssh.run(command, 10)
    assert (in_session.returncode, in_session.stdout) == (alone.returncode, alone.stdout)
    assert (in_session.stderr != "") == (alone.stderr != "")
    assert ssh.run("echo still here", 10).stdout == "still here\n"


def test_stdin_is_empty_as_on_a_channel_of_its_own(ssh: SSH) -> None:
    assert ssh.run("cat; echo done", 10).stdout == "done\n"
    assert ssh.run("echo next", 10).stdout == "next\n"


def test_a_command_that_times_out_ends_its_session(ssh: SSH) -> None:
    with pytest.raises(GuestCommandError, match=r"timed out after 0\.2s"):
        ssh.run("sleep 5; echo late", 0.2)
    assert ssh.run("echo fresh", 10).stdout == "fresh\n"  # not the late one's output
    assert ssh.log == [Session.COMMAND, Session.COMMAND]  # type: ignore[attr-defined]


def test_a_command_that_kills_the_session_shell_is_a_rig_error(ssh: SSH) -> None:
    with pytest.raises(GuestCommandError, match="session shell ended"):
        ssh.run("kill -9 $$", 10)  # $$ in a subshell is the shell's own
    assert ssh.run("echo again", 10).stdout == "again\n"


def test_a_background_jobs_late_output_is_dropped_between_commands(ssh: SSH) -> None:
    assert ssh.run("(sleep 0.3; echo stray) &", 10).stdout == ""
    ssh.run("sleep 0.6", 10)  # the stray line comes while this one runs: its output
    assert ssh.run("echo clean", 10).stdout == "clean\n"


def test_closing_after_the_server_went_away_is_quiet(ssh: SSH) -> None:
    """A VM's shutdown quits QEMU before it closes SSH: the session's channel close must not
    raise on the dead transport (seen: EOFError at teardown, once in a full run)."""
    assert ssh.run("true", 10).ok
    transport = ssh.client.get_transport()
    assert transport is not None
    transport.sock.close()  # the peer is gone; paramiko has not noticed yet
    ssh.close()
