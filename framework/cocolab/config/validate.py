"""Checks shared by every TOML file cocolab reads: unknown keys and wrong types are errors that
name the file (and entry) and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from cocolab.errors import ConfigError
from cocolab.paths import CONFIGS_DIR


def read_toml(path: Path) -> dict[str, Any]:
    """A UTF-8 TOML file (a leading BOM is tolerated), or one ConfigError naming it."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are "
                          "UTF-8") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_keys(data: dict[str, Any], allowed: dict[str, type | tuple[type, ...]],
               where: str) -> None:
    for key, value in data.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: "
                              f"{', '.join(sorted(allowed))}")
        want = allowed[key]
        if not isinstance(value, want) or (isinstance(value, bool) and want is int):
            names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise ConfigError(f"{where}: key {key!r} must be {names}, not "
                              f"{type(value).__name__}")


def strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: key {key!r} must be a list of strings")
    return tuple(value)


def choice(data: dict[str, Any], key: str, choices: tuple[str, ...], default: str,
           where: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ConfigError(f"{where}: key {key!r} is {value!r}; choose one of "
                          f"{', '.join(repr(c) if not c else c for c in choices)}")
    return str(value)


def in_range(data: dict[str, Any], key: str, low: int, high: int, where: str) -> None:
    """An integer key, if present, lies in [low, high]."""
    value = data.get(key)
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{where}: key {key!r} is {value}; give a number from {low} to "
                          f"{high}")


def shipped_names(kind: str) -> list[str]:
    """The shipped files of `kind` (lanes, machines, topologies) in qemu-configs/, by name."""
    return sorted(p.stem for p in (CONFIGS_DIR / kind).glob("*.toml"))


def shipped_path(kind: str, name: str, what: str) -> Path:
    """qemu-configs/KIND/NAME.toml, or NAME itself when it is a path to a .toml file; else
    one ConfigError listing the shipped choices."""
    path = Path(name) if name.endswith(".toml") else CONFIGS_DIR / kind / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"{what} {name!r}: no such {what}; choose one of "
                          f"{', '.join(shipped_names(kind))} or give a path to a .toml file")
    return path
