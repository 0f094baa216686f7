"""relaunch.sh delivers every word literally: rendered from hostile argv words and run against
a QEMU stand-in that records the argv it got (no QEMU)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from cocolab.qemu.argv import (
    VMConfig,
    base_args,
    boot_args,
    machine_args,
    nic_device,
    relaunch_script,
    ssh_netdev,
)

HOSTILE = (
    "$(touch {canary})", "`touch {canary}`", "; touch {canary}", "a && touch {canary}",
    "it's \"quoted\"", "new\nline", "x=127.0.0.1:0-:$(touch {canary})", "$PORT", "${PORT}",
    "*", "~root", "back\\slash", "-:22",
)


def test_hostile_words_arrive_literally_and_run_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    words = tuple(w.replace("{canary}", str(canary)) for w in HOSTILE)
    got = tmp_path / "argv.json"
    fake = tmp_path / "qemu"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(got)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    own_forward = "user,id=t,restrict=on,hostfwd=tcp:127.0.0.1:0-:80"  # a test's own port 0
    config = VMConfig(qemu=str(fake), kernel=Path("/K"), initrd=Path("/I"), cmdline=words,
                      qemu_args=("-netdev", own_forward, "-device", "e1000,netdev=t",
                                 "-fw_cfg", "name=opt/x,string=" + "".join(words)))
    script = tmp_path / "relaunch.sh"
    script.write_text(relaunch_script(config, tmp_path / f"keys $(touch {canary})\n#x"))
    result = subprocess.run(["sh", str(script), "4242"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    expected = [*base_args(config), *machine_args(config), *boot_args(config, "manual"),
                "-serial", "mon:stdio", "-netdev", ssh_netdev("4242"), "-device",
                nic_device(config), *config.qemu_args][1:]
    assert json.loads(got.read_text()) == expected
    assert own_forward in expected  # only cocolab's own forward became $PORT
    assert not canary.exists()
    assert "ssh -i " in result.stderr and " -p 4242 " in result.stderr


def test_no_path_stands_in_a_comment(tmp_path: Path) -> None:
    config = VMConfig(qemu="/usr/bin/qemu-system-x86_64", kernel=Path("/K"), initrd=Path("/I"))
    text = relaunch_script(config, Path("/home/dev/.cache/cocolab/keys/id_ed25519"))
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert comments and not any("/" in line for line in comments[1:])


def test_an_spdm_device_gets_a_responder_on_the_next_port_and_it_stops_with_qemu(
        tmp_path: Path) -> None:
    """The QEMU stand-in talks SPDM to the port its argv names, as QEMU's nvme would."""
    got = tmp_path / "answer.json"
    fake = tmp_path / "qemu"
    fake.write_text(
        f"#!{sys.executable}\nimport json, re, sys, socket\n"
        "from cocolab.spdm.transport import DataObject, Frame, read_frame\n"
        "port = int(re.search(r'spdm_port=(\\d+)', ' '.join(sys.argv)).group(1))\n"
        "s = socket.create_connection(('127.0.0.1', port))\n"
        "s.sendall(Frame(1, 2, DataObject(1, bytes.fromhex('10840000')).pack()).pack())\n"
        f"open({str(got)!r}, 'w').write(json.dumps([port, read_frame(s).payload.hex()]))\n")
    fake.chmod(0o755)
    config = VMConfig(qemu=str(fake), kernel=Path("/K"), initrd=Path("/I"),
                      qemu_args=("-device", "nvme,id=d0,spdm_port=@spdm:d0@,drive=b"))
    script = tmp_path / "relaunch.sh"
    script.write_text(relaunch_script(config, tmp_path / "key", sys.executable))
    ssh_port = _free_pair()
    result = subprocess.run(["sh", str(script), str(ssh_port)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    port, payload = json.loads(got.read_text())
    assert port == ssh_port + 1
    assert payload == "0100010004000000" "1004000000010012"  # VERSION 1.2, in a DOE object
    assert f"device d0 has a responder on 127.0.0.1:{port}" in result.stderr
    assert (tmp_path / "spdm-d0-root.pem").read_text().startswith("-----BEGIN CERTIFICATE")
    log = (tmp_path / "spdm-d0-manual.log").read_text()
    assert "<- GET_VERSION" in log
    # the responder's pid was printed into the script's list and killed at its end
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _listening(port):
        time.sleep(0.1)
    assert not _listening(port), "the responder outlived relaunch.sh"


def _free_pair() -> int:
    """A port P on 127.0.0.1 with P+1 free too (relaunch.sh gives the responders the ports
    after the SSH port), as the host kernel hands them out: no fixed port to collide on."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
