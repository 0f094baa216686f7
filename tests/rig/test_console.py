"""The serial console against a fake guest on a socketpair (no QEMU)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from cocolab.deadline import Deadline
from cocolab.errors import GuestCrashed
from cocolab.vm.console import Console
from cocolab.vm.machine import INIT_FAILED


class FakeGuest:
    """Echoes what it is sent (as a tty does) and answers framed commands from a script."""

    def __init__(self, sock: socket.socket, answers: dict[str, tuple[str, int]]):
        self.sock = sock
        self.answers = answers
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def serve(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                self.say(text + "\r\n")  # the terminal's echo
                m = re.search(r"@@CLB (\w+); sh -c (.*); printf", text)
                if not m:
                    continue
                nonce, command = m.group(1), m.group(2).strip("'")
                output, rc = self.answers[command]
                self.say(f"\r\n@@CLB-{nonce}\r\n{output}\r\n@@CLE-{nonce} {rc}\r\n")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Console, socket.socket]]:
    host, guest = socket.socketpair()
    console = Console(host, tmp_path / "console.log")
    yield console, guest
    console.close()
    guest.close()


def test_run_reads_the_exit_status_from_the_end_marker(pair) -> None:
    console, guest = pair
    FakeGuest(guest, {"uname -r": ("6.12.0", 0), "false": ("", 1)})
    r = console.run("uname -r", timeout=5)
    assert (r.returncode, r.output) == (0, "6.12.0")
    assert console.run("false", timeout=5).returncode == 1


def test_printk_lines_are_removed_from_the_output(pair) -> None:
    console, guest = pair
    FakeGuest(guest, {"x": ("a\r\n[   12.345678] Lockdown: x: y is restricted\r\nb", 3)})
    r = console.run("x", timeout=5)
    assert (r.returncode, r.output) == (3, "a\nb")


def test_everything_is_logged(pair, tmp_path: Path) -> None:
    console, guest = pair
    guest.sendall(b"early boot line\r\n")
    console.expect([b"early boot line"], Deadline(5))
    assert "early boot line" in console.tail()


def test_a_panic_during_expect_raises_guest_crashed(pair) -> None:
    console, guest = pair
    guest.sendall(b"[ 1.0] Kernel panic - not syncing: Attempted to kill init!\r\n"
                  b"[ 1.0] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---\r\n")
    with pytest.raises(GuestCrashed) as info:
        console.expect([b"COCOLAB READY t"], Deadline(5))
    assert "Kernel panic" in info.value.crash_line


def test_the_drain_thread_notices_a_crash_nobody_waits_for(pair) -> None:
    console, guest = pair
    guest.sendall(b"[ 3.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n"
                  b"[ 3.0] Call Trace:\r\n[ 3.0] ---[ end trace 0000000000000000 ]---\r\n")
    deadline = Deadline(5)
    while console.crash_line is None and not deadline.expired():
        time.sleep(0.02)  # poll interval
    assert console.crash_line is not None
    assert console.crash_line.startswith("BUG: kernel NULL pointer dereference")
    deadline = Deadline(5)
    while "end trace" not in console.tail() and not deadline.expired():
        time.sleep(0.02)  # poll interval
    assert "Call Trace:" in console.tail(), "the rest of the report reached the log"


def test_expect_times_out_with_pexpect_timeout(pair) -> None:
    console, _ = pair
    with pytest.raises(pexpect.TIMEOUT):
        console.expect([b"never"], Deadline(0.3))


def test_expect_reports_what_it_matched(pair) -> None:
    console, guest = pair
    guest.sendall(b"COCOLAB FAILED no NIC with MAC 52:54:00:12:34:56\r\n")
    index = console.expect([b"COCOLAB READY t", INIT_FAILED], Deadline(5))
    assert index == 1
    assert console.last_match == "no NIC with MAC 52:54:00:12:34:56"


def test_a_line_that_arrives_in_pieces_is_matched_whole(pair) -> None:
    console, guest = pair
    guest.sendall(b"COCOLAB FAILED modprobe dummy: modprobe: can't l")

    def rest() -> None:
        time.sleep(0.5)
        guest.sendall(b"oad module dummy\r\n")
    threading.Thread(target=rest, daemon=True).start()
    assert console.expect([b"COCOLAB READY t", INIT_FAILED], Deadline(5)) == 1
    assert console.last_match == "modprobe dummy: modprobe: can't load module dummy"
