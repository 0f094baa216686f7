"""vm.put: a developer's own file or binary, copied into the guest and run there."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

REPRODUCER = r"""
#include <stdio.h>
int main(void) { printf("reproducer ran on %s\n", "the guest"); return 3; }
"""


def test_a_static_binary_is_copied_and_runs(vm, tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc on this host: apt-get install --no-install-recommends gcc libc6-dev")
    src, binary = tmp_path / "repro.c", tmp_path / "repro"
    src.write_text(REPRODUCER)
    subprocess.run([gcc, "-static", "-O2", "-o", str(binary), str(src)], check=True)
    vm.put(binary, "/root/bin/repro", mode=0o755)
    result = vm.run("/root/bin/repro")
    assert (result.returncode, result.stdout) == (3, "reproducer ran on the guest\n")


def test_a_file_arrives_byte_for_byte(vm, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1024 + b"\n\0tail"
    (tmp_path / "blob").write_bytes(data)
    vm.put(tmp_path / "blob", "/tmp/deep/dir/blob")
    assert vm.run("sha256sum /tmp/deep/dir/blob", check=True).stdout.split()[0] == \
        hashlib.sha256(data).hexdigest()
    assert vm.run("stat -c %a /tmp/deep/dir/blob", check=True).stdout.strip() == "644"
