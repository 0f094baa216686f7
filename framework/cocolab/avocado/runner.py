"""avocado's runner for `cocolab-pytest` runnables: one test item, one pytest process.

The runnable's uri is the item's node id, its `rootdir` the directory pytest collected it
from. The item runs as `python -m pytest NODEID` there, with cocolab's plugin and its options
from PYTEST_ADDOPTS and COCOLAB_* as in any pytest run, and with `--results` in the task's
output directory: the VM's console log and any failure bundle land beside avocado's own logs.
Its VM is restored from cocolab's snapshot of that VM's first boot (see vm/snapshot.py), so a
test costs a restore, not a cold boot, though avocado gives every test a process of its own.

No leaks: pytest is started under `setpriv --pdeathsig KILL`, and pytest starts QEMU the same
way. When avocado's timeout (or anything else) kills this runner, the kernel kills pytest,
and pytest's death kills its QEMU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from avocado.core.nrunner.app import BaseRunnerApp
from avocado.core.nrunner.runnable import Runnable
from avocado.core.nrunner.runner import BaseRunner
from avocado.core.utils import messages

from cocolab.avocado.resolver import KIND, pytest_command
from cocolab.avocado.verdict import ERROR, outcome

RESULTS_DIR = "cocolab"
"""Under the task's avocado output directory: pytest's --results (VM logs, failures/)."""


def item_argv(nodeid: str, report: Path, results: Path | None) -> list[str]:
    argv = ["-v", "-rA", "--cocolab-avocado-report", str(report)]
    if results is not None:
        argv += ["--results", str(results)]
    return ["setpriv", "--pdeathsig", "KILL", "--", *pytest_command(*argv, nodeid)]


class PytestRunner(BaseRunner):
    name = KIND
    description = "Runs one pytest item (a cocolab test) in a pytest process of its own"

    def run(self, runnable: Runnable) -> Iterator[dict[str, object]]:
        yield messages.StartedMessage.get()
        rootdir = runnable.kwargs.get("rootdir")
        if not runnable.uri or not rootdir:
            yield messages.FinishedMessage.get(
                ERROR, fail_reason="a cocolab-pytest runnable needs a uri (the node id) and "
                                   "rootdir=DIR (where pytest collected it)")
            return
        if shutil.which("setpriv") is None:
            yield messages.FinishedMessage.get(
                ERROR, fail_reason="setpriv is not on PATH (it ties pytest's life to this "
                                   "runner's): apt-get install util-linux")
            return
        results = Path(runnable.output_dir) / RESULTS_DIR if runnable.output_dir else None
        with tempfile.TemporaryDirectory(prefix="cocolab-avocado-") as tmp:
            report, log = Path(tmp) / "report.json", Path(tmp) / "pytest.out"
            with log.open("wb") as out:
                proc = subprocess.Popen(item_argv(runnable.uri, report, results), cwd=rootdir,
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT)
                yield from self.running_loop(lambda: proc.poll() is not None)
            output = log.read_text(errors="replace")
            yield messages.StdoutMessage.get(output.encode())
            reports = json.loads(report.read_text()) if report.exists() else []
        status, reason, bundle = outcome(runnable.uri, reports, proc.returncode, output)
        if bundle is not None:
            yield messages.LogMessage.get(f"cocolab failure bundle: {bundle}\n"
                                          f"re-enter this VM: {bundle}/relaunch.sh\n".encode())
        yield messages.FinishedMessage.get(status, fail_reason=reason or None,
                                           returncode=proc.returncode)


class RunnerApp(BaseRunnerApp):
    PROG_NAME = f"avocado-runner-{KIND}"
    PROG_DESCRIPTION = "nrunner application for pytest items run with the cocolab plugin"
    RUNNABLE_KINDS_CAPABLE: ClassVar[list[str]] = [KIND]


def main() -> None:
    RunnerApp(print).run()


if __name__ == "__main__":
    main()
