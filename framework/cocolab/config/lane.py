"""Lanes: a named kernel + machine + accelerator + QEMU, from qemu-configs/lanes/*.toml.

Every error names the file and the key. Unknown keys are errors, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cocolab.config.validate import check_keys, choice, in_range, read_toml, strings
from cocolab.errors import ConfigError, said
from cocolab.paths import CONFIGS_DIR

ACCELS = ("auto", "kvm", "tcg")
MEMORY_MIB = (128, 1 << 20)
"""Guest RAM a lane may ask for, MiB: a Debian kernel and the initramfs need about 128."""
CPUS = (1, 64)
CC_KINDS = ("", "tdx", "snp")
"""'' for a plain lane; the confidential guests cocolab can boot."""


@dataclass(frozen=True)
class Lane:
    name: str
    source: str
    description: str = ""
    kernel: str = "debian:trixie"
    machine: str = "q35"
    accel: str = "auto"
    qemu: str | None = None
    memory_mib: int = 1024
    cpus: int = 2
    append: tuple[str, ...] = field(default=())
    cc: str = ""
    """'tdx' or 'snp' for a confidential-computing lane: its guests must prove it."""
    firmware: str = ""
    """-bios image for the lane's guests (CC lanes: searched in the usual places if empty)."""
    strict: bool = False
    """A host or QEMU that lacks what a test needs is an ERROR on this lane, not a skip (CC
    lanes are always strict: a green run must mean the tests ran)."""


_TYPES: dict[str, type | tuple[type, ...]] = {
    "description": str, "kernel": str, "machine": str, "accel": str, "qemu": str,
    "memory_mib": int, "cpus": int, "append": list, "cc": str, "firmware": str,
    "strict": bool,
}


def lane_dir() -> Path:
    return CONFIGS_DIR / "lanes"


def lane_names() -> list[str]:
    return sorted(p.stem for p in lane_dir().glob("*.toml"))


def load_lane(name_or_path: str, source: str = "--lane") -> Lane:
    """A lane by name (qemu-configs/lanes/NAME.toml) or by path to a .toml file, as given by
    `source` (--lane or COCOLAB_LANE, for messages)."""
    given = said(source, name_or_path)
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = lane_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"{given}: no such lane; choose one of "
                              f"{', '.join(lane_names())} or give a path to a .toml file")
    elif not path.is_file():
        raise ConfigError(f"{given}: no such file" if not path.exists() else
                          f"{given}: not a regular file")
    return parse_lane(path.stem, read_toml(path), str(path))


def parse_lane(name: str, data: dict[str, object], source: str) -> Lane:
    if not data:
        raise ConfigError(f"{source}: the lane is empty; set at least 'description' and "
                          "'kernel' (see qemu-configs/lanes/default.toml)")
    check_keys(data, _TYPES, source)
    in_range(data, "memory_mib", MEMORY_MIB[0], MEMORY_MIB[1], source)
    in_range(data, "cpus", CPUS[0], CPUS[1], source)
    choice(data, "accel", ACCELS, "auto", source)
    choice(data, "cc", CC_KINDS, "", source)
    if "machine" in data:
        from cocolab.topology.schema import machine_names
        choice(data, "machine", tuple(machine_names()), "q35", source)
    if data.get("firmware") and not data.get("cc"):
        raise ConfigError(f"{source}: key 'firmware' applies to confidential lanes only (set "
                          "'cc' to tdx or snp, or remove 'firmware')")
    append = strings(data, "append", source)
    values = {k: v for k, v in data.items() if k != "append"}
    return Lane(name=name, source=source, append=append, **values)  # type: ignore[arg-type]
