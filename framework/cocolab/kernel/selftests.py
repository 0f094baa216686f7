"""The kernel's own selftests (tools/testing/selftests), built on the host from the tree a
kernel is built from, installed as the kselftest installer does, and listed case by case.

Built with the tree's own make, out of tree: its UAPI headers (`make O=... headers`), then
`make -C tools/testing/selftests TARGETS=... install` with `USERLDFLAGS=-static` (lib.mk's
own hook), so a program runs in any guest whatever libc it has. The install directory is what
run_kselftest.sh expects: kselftest-list.txt, the runner, one directory per target.

Listing: a program built on kselftest_harness.h lists its cases with `-l` (fixture, variant
and test in printf columns; a case is fixture.variant.test, or fixture.test without
variants, the name its `-r` runs). Only programs that carry the harness's own usage text are
asked, and only to list; any other program (a script, a plain C test) is one item, run
whole by the runner. Nothing is ever run on the host but `make` and `PROGRAM -l`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from filelock import FileLock

from cocolab import progress
from cocolab.errors import KernelError
from cocolab.kernel.build import prepare_tree, read_patch, resolve_source, source_key
from cocolab.kernel.spec import BuildTreeSpec, KernelSpec, SourceSpec
from cocolab.paths import cache_dir

_HARNESS_MARK = b"\t-l       list all tests\n"
"""kselftest_harness.h's usage text (the same since `-l` came in 5.10): a harness program."""
_LIST_TIMEOUT_S = 10.0
_TARGET = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class SelftestError(KernelError):
    """The selftests could not be built, installed or listed."""


class NoSelftestSource(SelftestError):
    """The kernel has no source tree cocolab can build selftests from (a skip, not a failure:
    the message says which kernel would have one)."""


def source_for(spec: KernelSpec) -> tuple[Path, str]:
    """The tree to build selftests from, and what names it in the cache: a kernel cocolab
    builds, its patched tree (the one its kernel is built from); a build tree (O=), the
    tree it was built from. A Debian package or a lone image has none."""
    if isinstance(spec, SourceSpec):
        source = resolve_source(spec.source)
        patches = [read_patch(p) for p in spec.patches]
        where = source_key(source)
        with FileLock(str(cache_dir("build") / f"{where}.lock")):  # as kernel/build.py
            tree = prepare_tree(source, patches, where)
        return tree, hashlib.sha256(
            "\0".join((where, *(p.digest() for p in patches))).encode()).hexdigest()[:16]
    if isinstance(spec, BuildTreeSpec):
        link = spec.tree / "source"
        if not link.is_dir():
            raise NoSelftestSource(
                f"{spec.tree} is an in-tree build: selftests are built out of tree (O=), which "
                "make refuses beside an in-tree .config; build the kernel with O=DIR and pass "
                "that, or pass build:<your tree>")
        tree = link.resolve()
        return tree, hashlib.sha256(str(tree).encode()).hexdigest()[:16]
    raise NoSelftestSource(
        f"kernel {spec} comes without its source tree: selftests are built from the tree "
        "the kernel is built from; pass --kernel build:debian:X.Y (cocolab builds it with "
        "the targets' options) or --kernel a build tree (O=DIR)")


@dataclass(frozen=True)
class Program:
    target: str
    """The selftest target (a directory under tools/testing/selftests): 'iommu'."""
    name: str
    """The program, as kselftest-list.txt names it: 'iommufd'."""
    cases: tuple[str, ...] | None
    """A harness program's cases (what `-r` runs), or None: the program is one test."""

    @property
    def ident(self) -> str:
        return f"{self.target}:{self.name}"


@dataclass(frozen=True)
class Installed:
    root: Path
    """The install directory: run_kselftest.sh, kselftest-list.txt, TARGET/PROGRAM."""
    programs: tuple[Program, ...]

    @cached_property
    def digest(self) -> str:
        """Names this install inside a guest: a rebuilt program is a new directory."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(self.root)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()[:16]

    def tarball(self) -> bytes:
        """The install as an uncompressed tar (the guest's busybox unpacks it from stdin)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(self.root, arcname=".", filter=_plain)
        return buf.getvalue()


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def check_target(name: str) -> str:
    if not _TARGET.match(name) or ".." in name.split("/"):
        raise SelftestError(f"selftest target {name!r}: a directory under "
                            "tools/testing/selftests (letters, digits, _ . - and /)")
    return name


def target_config(tree: Path, target: str) -> list[str]:
    """What TARGET's `config` file in the kernel tree asks of the kernel."""
    return config_requirements(tree / "tools/testing/selftests" / check_target(target)
                               / "config")


def config_requirements(path: Path) -> list[str]:
    """A selftest `config` file as requirements ('IOMMUFD_TEST=y'; 'NAME' for =m; 'NAME=n'); []
    when there is none. Values other than y, m and unset (a number, a string) are left to
    the kernel's defaults: no gate can name them."""
    if not path.is_file():
        return []
    wants = []
    for line in path.read_text(errors="replace").splitlines():
        if m := re.match(r"^CONFIG_(\w+)=([ym])\s*$", line):  # =m: built in is as good
            wants.append(f"{m.group(1)}=y" if m.group(2) == "y" else m.group(1))
        elif m := re.match(r"^# CONFIG_(\w+) is not set\s*$", line):
            wants.append(f"{m.group(1)}=n")
    return wants


def _make(argv: list[str], what: str) -> None:
    done = subprocess.run(["make", "-s", *argv], capture_output=True, text=True, check=False,
                          env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "rror" in line]
        tail = (errors or done.stderr.splitlines())[-8:]
        raise SelftestError(f"{what} failed (make exit {done.returncode}):\n" + "\n".join(tail))


def build(tree: Path, identity: str, targets: tuple[str, ...], jobs: int = 0) -> Installed:
    """Build and install `targets` from the kernel tree `tree` (never written to), under the
    cache; incremental, so an unchanged tree costs make's own checks. `identity` names the
    tree in the cache (its source key)."""
    for target in targets:
        check_target(target)
        if not (tree / "tools/testing/selftests" / target / "Makefile").is_file():
            raise SelftestError(f"selftest target {target!r}: {tree}/tools/testing/selftests/"
                                f"{target}/Makefile does not exist")
    lacking = [tool for tool in ("make", "gcc", "rsync") if shutil.which(tool) is None]
    if lacking:
        raise SelftestError(f"building selftests needs {', '.join(lacking)}: apt-get install "
                            f"--no-install-recommends {' '.join(lacking)} (./setup.sh "
                            "installs them)")
    key = hashlib.sha256("\0".join((identity, *sorted(targets))).encode()).hexdigest()[:16]
    work = cache_dir("kselftest", key)
    jobs = jobs or len(os.sched_getaffinity(0))
    with FileLock(str(work.parent / f"{key}.lock")), \
            progress.step(f"building selftests {', '.join(targets)}") as step:
        _make(["-C", str(tree), f"O={work / 'headers'}", f"-j{jobs}", "headers"],
              f"make headers in {tree}")
        install = work / "install"
        _make(["-C", str(tree / "tools/testing/selftests"), f"O={work / 'build'}", f"-j{jobs}",
               f"TARGETS={' '.join(targets)}",
               f"KHDR_INCLUDES=-isystem {work / 'headers/usr/include'}",
               "USERLDFLAGS=-static", f"INSTALL_PATH={install}", "install"],
              f"building selftests {', '.join(targets)}")
        programs = tuple(list_programs(install))
        step.done = f"{len(programs)} programs"
    return Installed(install, programs)


def list_programs(install: Path) -> list[Program]:
    """The programs kselftest-list.txt names, each with its cases if it is a harness one."""
    listing = install / "kselftest-list.txt"
    if not listing.is_file():
        raise SelftestError(f"{listing} does not exist: not a kselftest install")
    programs = []
    for line in listing.read_text().splitlines():
        target, sep, name = line.strip().partition(":")
        if not sep:
            continue
        path = install / target / name
        cases = list_cases(path) if _is_harness(path) else None
        programs.append(Program(target, name, cases))
    return programs


def _is_harness(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                return False
            return _HARNESS_MARK in path.read_bytes()
    except OSError:
        return False


def list_cases(path: Path) -> tuple[str, ...]:
    """A harness program's cases, from its own `-l` (run in an empty directory, with an
    empty environment, for at most 10 s)."""
    with tempfile.TemporaryDirectory(prefix="cocolab-list-") as empty:
        try:
            done = subprocess.run([str(path), "-l"], capture_output=True, text=True,
                                  cwd=empty, env={}, timeout=_LIST_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise SelftestError(f"{path} -l did not list its tests in {_LIST_TIMEOUT_S:g} s"
                                ) from None
    cases = parse_harness_list(done.stderr)
    if not cases:
        raise SelftestError(f"{path} -l listed no tests (exit {done.returncode}): "
                            f"{done.stderr.strip()[-300:]!r}")
    return cases


_FIXTURE_W, _VARIANT_W = 20, 25
"""The widths of test_harness_list_tests()'s "%-20s %-25s %s" columns."""


def _column(row: str, width: int) -> tuple[str, str]:
    """A printf `%-Ns ` field at the start of `row`: (its word or "", the rest of the row)."""
    if row[:1] in ("", " "):
        return "", row[width + 1:]
    word = row.split(" ", 1)[0]
    return word, row[max(width, len(word)) + 1:]


def parse_harness_list(text: str) -> tuple[str, ...]:
    """Cases from `-l` output: per fixture, every variant (or none) with every test, in the
    order the harness runs them (variants outer, tests inner), as fixture[.variant].test."""
    fixtures: list[tuple[str, list[str], list[str]]] = []
    for row in text.splitlines():
        if not row.strip() or row.startswith("# FIXTURE") or set(row) == {"-"}:
            continue
        fixture, rest = _column(row, _FIXTURE_W)
        variant, rest = _column(rest, _VARIANT_W)
        test = rest.strip()
        if fixture:
            fixtures.append((fixture, [], []))
        if not fixtures:
            continue
        if variant:
            fixtures[-1][1].append(variant)
        if test:
            fixtures[-1][2].append(test)
    return tuple(f"{fixture}.{variant}.{test}" if variant else f"{fixture}.{test}"
                 for fixture, variants, tests in fixtures
                 for variant in (variants or [""]) for test in tests)
