"""A built kernel in use: every process that boots a `cocolab build` O= directory holds a
shared lock on it for its whole life, and a build that would write that directory takes the
lock exclusively, so no build rewrites the kernel, modules or .config a session is booting
or reporting on. Each build has an O= directory of its own (kernel/build.py), so this only
ever waits for a rebuild of the same request (a tree the user edited), and pruning skips a
directory in use.

`flock(2)` locks belong to an open file, and a process may already hold the shared lock when
it builds (a session that resolved `build:SOURCE`, then builds again): the held file is
reused, its lock converted, then given back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_NAME = ".cocolab-in-use"
_HELD: dict[Path, int] = {}


def _open(out: Path) -> int:
    return os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def hold(out: Path) -> None:
    """Hold `out` (shared) until this process ends."""
    out = out.resolve()
    if out in _HELD:
        return
    fd = _open(out)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD[out] = fd


def _release(out: Path) -> None:
    """Give `out` back before this process ends (tests)."""
    fd = _HELD.pop(out.resolve(), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def exclusive(out: Path, waiting: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """`out` for writing: waits (saying so once) while other processes boot it."""
    out = out.resolve()
    mine = _HELD.get(out)
    fd = mine if mine is not None else _open(out)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting(f"waiting for the sessions that boot {out} to end (they hold it: "
                    f"{out / LOCK_NAME})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if mine is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            os.close(fd)


def in_use(out: Path) -> bool:
    """Some process holds `out` (this one included)."""
    if out.resolve() in _HELD:
        return True
    try:
        fd = _open(out)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
