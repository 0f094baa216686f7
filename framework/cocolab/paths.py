"""Where cocolab keeps its caches. One root, overridable with COCOLAB_CACHE."""

from __future__ import annotations

import os
from pathlib import Path

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
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: a reader sees the old file or the new one, and an
    interrupted write leaves no half file behind (tmp in the same directory, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
