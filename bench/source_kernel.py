#!/usr/bin/env python3
"""Build a kernel from Debian's linux-source the way a kernel developer would use cocolab:

    python bench/source_kernel.py DIR [--suite trixie] [--no-modules] [--jobs N]

Fetches linux-source-<version> of the suite through cocolab's private apt (no root, the
host's own mirror) and unpacks it into DIR (a DIR that is a kernel tree already is used as it
is). Then `cocolab kconfig --apply DIR` (defconfig plus the fragment the rig and every suite
need); with --no-modules `scripts/config --disable MODULES` and `make olddefconfig` too. Then
`make -jN bzImage modules` (bzImage alone without modules), timing each step. Then run
`pytest tests/ --kernel DIR`.

Needs what a kernel build needs: apt-get install make gcc flex bison bc libelf-dev libssl-dev.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "framework"))

from cocolab.kernel.apt import PrivateApt  # noqa: E402
from cocolab.paths import cache_dir  # noqa: E402


def step(name: str, argv: list[str], cwd: Path) -> float:
    start = time.monotonic()
    print(f"$ {' '.join(argv)}", flush=True)
    subprocess.run(argv, cwd=cwd, check=True, stdin=subprocess.DEVNULL)
    took = time.monotonic() - start
    print(f"{name}: {took:.0f} s", flush=True)
    return took


def fetch_source(suite: str, dest: Path) -> Path:
    """DEST/linux-source-<version>: the suite's newest linux-source, unpacked."""
    apt = PrivateApt(cache_dir("apt", suite), suite)
    apt.update()
    package = apt.depends("linux-source")[0]  # the meta package names the versioned one
    tree = dest / package
    if (tree / "Makefile").exists():
        return tree
    deb, = apt.download([package], dest)
    unpacked = dest / "deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tarball, = (unpacked / "usr/src").glob(f"{package}.tar.*")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="tar")
    shutil.rmtree(unpacked)
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--suite", default="trixie")
    parser.add_argument("--no-modules", action="store_true", help="a MODULES=n kernel")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tree = (args.dir.resolve() if (args.dir / "Makefile").exists()
            else fetch_source(args.suite, args.dir.resolve()))
    cocolab = [str(Path(sys.executable).with_name("cocolab"))]
    times = {"kconfig --apply": step("kconfig --apply", [*cocolab, "kconfig", "--apply",
                                                           str(tree)], REPO)}
    targets = ["bzImage", "modules"]
    if args.no_modules:
        step("disable MODULES", ["scripts/config", "--disable", "MODULES"], tree)
        step("olddefconfig", ["make", "olddefconfig"], tree)
        targets = ["bzImage"]
    times["build"] = step("build", ["make", f"-j{args.jobs}", *targets], tree)
    print(f"{tree}: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f" ({args.jobs} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
