"""python -m cocolab.devices, as relaunch.sh runs it: --background returns once the socket
listens, printing the PID that serves; SIGTERM ends it and removes the socket."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path


def test_background_back_end_answers_then_stops_on_sigterm(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    out = subprocess.run([sys.executable, "-m", "cocolab.devices", "--socket", str(sock),
                          "--backend", "vhost-user-blk", "--personality", "seg-max-0",
                          "--log", str(tmp_path / "d.log"), "--background"],
                         capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout)
    try:
        with socket.socket(socket.AF_UNIX) as front:
            front.connect(str(sock))  # listening already: QEMU may start at once
            front.sendall(struct.pack("<III", 1, 1, 0))  # GET_FEATURES
            _, flags, size = struct.unpack("<III", front.recv(12))
            assert flags == 0x5 and size == 8
            assert front.recv(8)
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text():
            break
        time.sleep(0.05)
    assert not sock.exists()
    assert "message GET_FEATURES" in (tmp_path / "d.log").read_text()


def test_a_socket_it_cannot_make_is_one_line_and_status_1(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cocolab.devices", "--socket",
                          str(tmp_path / "no" / "such" / "d.sock"), "--backend",
                          "vhost-user-rng", "--background"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"cocolab.devices: cannot listen on {tmp_path}/no/such/d.sock: No such file or "
        "directory"]
