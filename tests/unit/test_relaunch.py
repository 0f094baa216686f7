"""relaunch.sh delivers every word literally: rendered from hostile argv words and run against
a QEMU stand-in that records the argv it got (no QEMU)."""

from __future__ import annotations

import json
import subprocess
import sys
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
