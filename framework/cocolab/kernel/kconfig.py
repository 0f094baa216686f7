"""A parsed kernel .config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocolab.errors import KernelError

_REQUIREMENT = re.compile(r"^(?:CONFIG_)?([A-Z0-9_]+)(?:=([ymn]))?$")
REQUIREMENT_SYNTAX = "NAME, NAME=y, NAME=m or NAME=n"
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def _canon(name: str) -> str:
    return name if name.startswith("CONFIG_") else "CONFIG_" + name


@dataclass(frozen=True)
class Kconfig:
    """Option values as written in .config: 'y', 'm', a number or a quoted string.

    Options that are unset (or absent) read as None. Names may be given with or without
    the CONFIG_ prefix.
    """

    values: Mapping[str, str]
    source: str = ""

    @classmethod
    def parse(cls, text: str, source: str = "") -> Kconfig:
        values: dict[str, str] = {}
        for line in text.splitlines():
            if m := _SET.match(line.strip()):
                values[m.group(1)] = m.group(2)
            elif m := _UNSET.match(line.strip()):
                values.pop(m.group(1), None)
        return cls(values, source)

    @classmethod
    def from_file(cls, path: Path) -> Kconfig:
        """The config in `path`; KernelError if it is not a kernel .config at all (a binary,
        an empty file), which would make every kconfig-gated test skip for a false reason."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KernelError(f"kernel config {path}: {exc.strerror}") from None
        config = cls.parse(data.decode(errors="replace"), str(path))
        if b"\0" in data or not config.values:
            raise KernelError(f"kernel config {path} is not a kernel .config (no CONFIG_ "
                              "lines); give the build's .config or /boot/config-<release>")
        return config

    def get(self, name: str) -> str | None:
        return self.values.get(_canon(name))

    def builtin(self, name: str) -> bool:
        return self.get(name) == "y"

    def enabled(self, name: str) -> bool:
        """True for =y and =m."""
        return self.get(name) in ("y", "m")

    def describe(self, name: str) -> str:
        """'CONFIG_X=y' or 'CONFIG_X is not set', for skip reasons and reports."""
        value = self.get(name)
        return f"{_canon(name)}={value}" if value is not None else f"{_canon(name)} is not set"


def parse_requirement(text: str) -> tuple[str, str | None] | None:
    """'NAME' (=y or =m), 'NAME=y', 'NAME=m' or 'NAME=n' (not set), CONFIG_ prefix optional,
    as (CONFIG_NAME, wanted) with wanted None for 'y or m'; None if `text` is none of them."""
    m = _REQUIREMENT.match(text)
    return ("CONFIG_" + m.group(1), m.group(2)) if m else None


def unmet(kconfig: Kconfig, reqs: list[tuple[str, str | None]]) -> list[str]:
    """A description of every requirement the config does not meet."""
    lines = []
    for name, wanted in reqs:
        value = kconfig.get(name)
        ok = (value in ("y", "m") if wanted is None else
              value is None if wanted == "n" else value == wanted)
        if not ok:
            need = {None: "=y or =m", "y": "=y", "m": "=m", "n": " not set"}[wanted]
            lines.append(f"needs {name}{need}, kernel has {kconfig.describe(name)}")
    return lines
