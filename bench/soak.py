#!/usr/bin/env python3
"""Run suites again and again and count what the rig got wrong.

    python bench/soak.py --runs 10 --kernels debian:trixie,debian:sid \
        --suites devmem,dma_ownership,device_filter --hog [--json soak.json] [-- PYTEST ARGS]

Every (run, kernel, suite) is one `pytest tests/<suite> --kernel K` in a subprocess, with its
own results directory and JUnit XML. For each it records passed, failed, errors and skipped,
rig errors by cause (the exception class of each error, or cocolab's own one-line reason),
wall time, and any QEMU left over once pytest exited: soak.py makes itself the child
subreaper, so a QEMU that outlived its pytest is re-parented here, found, named and killed
(by PID). `--hog` keeps every core busy with a spinning process meanwhile, the condition under
which rig flakes have been seen. Exits 1 if anything failed, errored or was left over.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36
_CAUSE = re.compile(r"\b(cocolab\.[\w.]+\.)?(\w+(?:Error|Crashed|Stopped|Warned))\b")


@dataclass
class SuiteRun:
    run: int
    kernel: str
    suite: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    rig_errors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """'<test>: <first line of its error or failure>' for each test that did not pass."""
    kept: str = ""
    """Where this run's pytest log, JUnit and failure bundles were kept (runs that went red)."""
    wall_s: float = 0.0
    leftover_qemu: list[str] = field(default_factory=list)
    exit_status: int = 0


def cause(message: str) -> str:
    """A short name for why a test errored: the exception class it names, else its first
    words ('cocolab: RIG FAILURE: its VM ... failed to boot' -> 'boot failure of a shared
    VM')."""
    if "RIG FAILURE: its VM" in message:
        return "a shared VM that failed to boot"
    m = _CAUSE.search(message)
    if m:
        return m.group(2)
    return " ".join(message.split()[:4]) or "unknown"


def parse_junit(path: Path, record: SuiteRun) -> None:
    root = ET.parse(path).getroot()
    rig: Counter[str] = Counter()
    for case in root.iter("testcase"):
        error, failure = case.find("error"), case.find("failure")
        bad = error if error is not None else failure
        if bad is not None:
            first = (bad.get("message") or bad.text or "").strip().splitlines()
            record.problems.append(f"{case.get('classname')}::{case.get('name')}: "
                                   f"{first[0][:300] if first else '(no message)'}")
        if error is not None:
            record.errors += 1
            rig[cause(error.get("message", "") + " " + (error.text or "")[:400])] += 1
        elif failure is not None:
            message = failure.get("message", "") + " " + (failure.text or "")[:400]
            if "RIG FAILURE" in (failure.text or "") or _is_rig(message):
                record.errors += 1  # a VMError in a test body: the rig's, counted as error
                rig[cause(message)] += 1
            else:
                record.failed += 1
        elif case.find("skipped") is not None:
            record.skipped += 1
        else:
            record.passed += 1
    record.rig_errors = dict(rig)


def _is_rig(message: str) -> bool:
    m = _CAUSE.search(message)
    return bool(m and m.group(2) in {"BootError", "GuestCrashed", "GuestStopped",
                                     "GuestCommandError", "TopologyError", "VMStateError"})


def leftovers() -> list[str]:
    """Live processes re-parented to this (subreaper) process: whatever outlived its pytest.

    A zombie is not one: it is dead, and only waits for its reaper (this process, when the
    parent that should have reaped it went first: the QEMU of a test that kills its inner
    pytest on purpose, tests/smoke/test_no_orphans.py, dies of its parent-death signal). Zombies
    are reaped here and not counted."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) != me or entry.name in _hogs:
            continue
        if fields[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), 0)
            continue
        found.append(f"{entry.name} {argv[0].decode(errors='replace')}")
    return found


def reap(found: list[str]) -> None:
    for line in found:
        pid = int(line.split()[0])
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_hogs: set[str] = set()


def start_hogs() -> list[subprocess.Popen[bytes]]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    _hogs.update(str(h.pid) for h in hogs)
    return hogs


def run_suite(record: SuiteRun, extra: list[str], workdir: Path) -> None:
    junit = workdir / "junit.xml"
    argv = [sys.executable, "-m", "pytest", f"tests/{record.suite}", "--kernel", record.kernel,
            "-q", "-p", "no:cacheprovider", "--junitxml", str(junit),
            "--results", str(workdir / "results"), *extra]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          check=False)
    record.wall_s = round(time.monotonic() - start, 1)
    record.exit_status = proc.returncode
    (workdir / "pytest.log").write_bytes(proc.stdout)
    if junit.exists():
        parse_junit(junit, record)
    else:
        record.rig_errors = {f"pytest exited {proc.returncode} without a report": 1}
        record.errors += 1
    record.leftover_qemu = leftovers()
    reap(record.leftover_qemu)


def table(records: list[SuiteRun]) -> str:
    head = f"{'run':>3} {'kernel':<16} {'suite':<15} {'pass':>4} {'fail':>4} {'err':>4} " \
           f"{'skip':>4} {'wall s':>7} {'left':>4}  rig errors"
    rows = [head, "-" * len(head)]
    for r in records:
        causes = ", ".join(f"{k} x{v}" for k, v in r.rig_errors.items()) or "-"
        rows.append(f"{r.run:>3} {r.kernel:<16} {r.suite:<15} {r.passed:>4} {r.failed:>4} "
                    f"{r.errors:>4} {r.skipped:>4} {r.wall_s:>7.1f} {len(r.leftover_qemu):>4}"
                    f"  {causes}")
    total = Counter[str]()
    for r in records:
        total.update(r.rig_errors)
    rows.append("-" * len(head))
    rows.append(f"{len(records)} suite runs: {sum(r.passed for r in records)} passed, "
                f"{sum(r.failed for r in records)} failed, {sum(r.errors for r in records)} "
                f"errors, {sum(r.skipped for r in records)} skipped; rig errors: "
                f"{dict(total) or 0}; leftover QEMU: "
                f"{sum(len(r.leftover_qemu) for r in records)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernels", default="debian:trixie")
    parser.add_argument("--suites", default="devmem")
    parser.add_argument("--hog", action="store_true", help="a spinning process per core")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--keep", default="soak-red", metavar="DIR",
                        help="where the logs and bundles of red suite runs are kept "
                             "(default: ./soak-red)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to every pytest")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("soak: cannot become the child subreaper; leftover QEMU goes unseen",
              file=sys.stderr)
    hogs = start_hogs() if args.hog else []
    records: list[SuiteRun] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cocolab-soak-") as tmp:
            for run in range(1, args.runs + 1):
                for kernel in args.kernels.split(","):
                    for suite in args.suites.split(","):
                        record = SuiteRun(run, kernel, suite)
                        workdir = Path(tmp, f"{run}-{kernel.replace(':', '-')}-{suite}")
                        workdir.mkdir()
                        run_suite(record, args.pytest_args, workdir)
                        if record.failed or record.errors or record.leftover_qemu:
                            keep = Path(args.keep) / workdir.name  # before tmp goes away
                            shutil.copytree(workdir, keep, dirs_exist_ok=True)
                            record.kept = str(keep)
                        records.append(record)
                        print(table([record]).splitlines()[2], flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(table(records))
    for record in records:
        for problem in record.problems:
            print(f"run {record.run} {record.kernel} {record.suite}: {problem}")
        if record.kept:
            print(f"  logs and bundles kept in {record.kept}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    bad = any(r.failed or r.errors or r.leftover_qemu for r in records)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
