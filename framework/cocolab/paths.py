"""Where cocolab keeps its caches: one root, overridable with COCOLAB_CACHE, private to you.

The root is 0700 (tightened if it was not), and every file that holds key material (the SSH
keys, guest images, snapshots) is written 0600 and checked on read: a guest image or a
snapshot others could read gives away the guest's SSH host key, and the host-key pin with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cocolab.errors import HostError

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: guests/ and qemu-configs/ live here (the package is used from a source tree)."""

GUESTS_DIR = REPO_ROOT / "guests"
CONFIGS_DIR = REPO_ROOT / "qemu-configs"


def cache_root() -> Path:
    """$COCOLAB_CACHE, else $XDG_CACHE_HOME/cocolab, else ~/.cache/cocolab."""
    env = os.environ.get("COCOLAB_CACHE")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "cocolab"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = root.stat()
    if st.st_uid != os.getuid():
        raise HostError(f"{root}: cocolab's cache must be yours (it belongs to uid "
                        f"{st.st_uid}); set COCOLAB_CACHE to a directory of your own")
    _claim(root)
    if st.st_mode & 0o077:
        root.chmod(0o700)  # a cache made before it was private, or by a loose umask
    return root


CACHE_MARK = ".cocolab-cache"
CACHE_PARTS = frozenset({"apt", "build", "guest", "helpers", "host", "kernels", "keys",
                         "snapshots", "tree-modules", CACHE_MARK})
"""What cocolab keeps at its cache's root: a directory holding anything else is not one."""


def _claim(root: Path) -> None:
    """Make `root` cocolab's cache, if it is new, empty or one already: a directory that holds
    other things (COCOLAB_CACHE=~) is refused, never tightened to 0700 under its owner."""
    if (root / CACHE_MARK).exists():
        return
    others = sorted(p.name for p in root.iterdir() if p.name not in CACHE_PARTS)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise HostError(f"{root}: holds {shown}, so it is not a cache of cocolab's; cocolab "
                        "makes its cache private (0700) and keeps keys there: set "
                        "COCOLAB_CACHE to a new or empty directory")
    (root / CACHE_MARK).touch(mode=0o600)


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def check_private(path: Path, what: str) -> None:
    """HostError unless `path` is yours and nobody else may read or write it."""
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise HostError(f"{path}: {what} must belong to you with mode 0600 (it is uid "
                        f"{st.st_uid}, mode {st.st_mode & 0o777:04o}); remove it and cocolab "
                        "makes a new one")


def private_dir(path: Path, fresh: bool = False) -> Path:
    """`path` as a directory that is yours with mode 0700 (made, or tightened); `fresh`
    empties it first. One that belongs to someone else is refused (HostError)."""
    if fresh and path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
        raise HostError(f"{path}: must be a directory of yours (it is uid {st.st_uid}"
                        f"{', a link' if path.is_symlink() else ''}); choose another")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for writing, created (or truncated) with mode 0600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as f:
        yield f


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: a reader sees the old file or the new one, and an
    interrupted write leaves no half file behind (tmp in the same directory, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
