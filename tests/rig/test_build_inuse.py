"""A session in another process holds the build it boots (kernel/inuse.py): a build that
would rewrite that O= directory waits for it, saying so once, and goes on when it ends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cocolab.kernel import inuse

HOLD = """
import sys, time
from pathlib import Path
from cocolab.kernel import inuse
inuse.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_rebuild_waits_for_the_session_booting_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    session = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "1.5"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None and session.stdout.readline() == "held\n"
        assert inuse.in_use(out)
        said: list[str] = []
        start = time.monotonic()
        with inuse.exclusive(out, said.append):
            waited = time.monotonic() - start
        assert waited > 0.5, "the build did not wait for the session"
        assert len(said) == 1 and f"waiting for the sessions that boot {out}" in said[0]
    finally:
        session.kill()
        session.wait()
    assert not inuse.in_use(out)
