"""Lanes: a named kernel + machine + accelerator + QEMU, from qemu-configs/lanes/*.toml.

Every error names the file and the key. Unknown keys are errors, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cocolab.config.validate import (
    check_keys,
    choice,
    in_range,
    read_toml,
    shipped_names,
    strings,
)
from cocolab.constants import ACCELS, CC_KINDS
from cocolab.errors import ConfigError, said
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, parse_requirement
from cocolab.paths import CONFIGS_DIR, REPO_ROOT

MEMORY_MIB = (128, 1 << 20)
"""Guest RAM a lane may ask for, MiB: a Debian kernel and the initramfs need about 128."""
CPUS = (1, 64)


BUILD_PREFIX = "build:"
"""A lane kernel 'build:SOURCE' is built by `cocolab build` (kernel/build.py) from SOURCE."""


@dataclass(frozen=True)
class ExpectedFailure:
    """A known-issue baseline: a test this lane's kernel is expected to fail, and why."""

    test: str
    """A node id, or its tail ('test_x.py::test_y[param]'); matched against the end of ids."""
    reason: str
    until: str
    """What ends the baseline ('the /dev/mem CC rule is merged')."""
    reference: str = ""

    def matches(self, nodeid: str) -> bool:
        return nodeid == self.test or nodeid.endswith("/" + self.test) \
            or nodeid.endswith("::" + self.test)

    def __str__(self) -> str:
        ref = f" ({self.reference})" if self.reference else ""
        return f"known issue: {self.reason}{ref}; expected until {self.until}"


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
    simulated: bool = False
    """The CC guest is simulated (cc-sim): its kernel forces the confidential decision
    without the hardware. Nothing that needs the hardware may pass on such a lane."""
    patches: tuple[str, ...] = field(default=())
    """Patches (paths in the checkout) a 'build:' kernel, or a tree given to --kernel, is
    built with."""
    kconfig: tuple[str, ...] = field(default=())
    """Options (NAME, NAME=y|m|n) such a build adds to cocolab's fragment."""
    expected_failures: tuple[ExpectedFailure, ...] = field(default=())

    @property
    def hardware_cc(self) -> str:
        """'tdx' or 'snp' when the guests are confidential for real, else ''."""
        return "" if self.simulated else self.cc

    @property
    def cc_words(self) -> str:
        """'TDX', or 'simulated TDX', for messages."""
        return ("simulated " if self.simulated else "") + self.cc.upper()

    @property
    def build_source(self) -> str | None:
        kernel = self.kernel
        return kernel[len(BUILD_PREFIX):] if kernel.startswith(BUILD_PREFIX) else None

    @property
    def patch_paths(self) -> tuple[Path, ...]:
        return tuple(REPO_ROOT / p for p in self.patches)

    def expected_failure(self, nodeid: str) -> ExpectedFailure | None:
        return next((e for e in self.expected_failures if e.matches(nodeid)), None)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "description": str, "kernel": str, "machine": str, "accel": str, "qemu": str,
    "memory_mib": int, "cpus": int, "append": list, "cc": str, "firmware": str,
    "strict": bool, "simulated": bool, "patches": list, "kconfig": list,
    "expected_failure": list,
}
_BASELINE_TYPES: dict[str, type | tuple[type, ...]] = {
    "test": str, "reason": str, "until": str, "reference": str,
}


def lane_dir() -> Path:
    return CONFIGS_DIR / "lanes"


def lane_names() -> list[str]:
    return shipped_names("lanes")


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
        choice(data, "machine", tuple(shipped_names("machines")), "q35", source)
    if data.get("firmware") and not data.get("cc"):
        raise ConfigError(f"{source}: key 'firmware' applies to confidential lanes only (set "
                          "'cc' to tdx or snp, or remove 'firmware')")
    if data.get("simulated") and not data.get("cc"):
        raise ConfigError(f"{source}: key 'simulated' says what kind of CC guest is simulated; "
                          "set 'cc' too (tdx)")
    if data.get("simulated") and data.get("cc") == "snp":
        raise ConfigError(f"{source}: an SNP guest cannot be simulated honestly (its policy "
                          "state, sev_status, makes the kernel issue PVALIDATE and GHCB calls); "
                          "simulate tdx")
    lists = {key: strings(data, key, source) for key in ("append", "patches", "kconfig")}
    for patch in lists["patches"]:
        if not (REPO_ROOT / patch).is_file():
            raise ConfigError(f"{source}: key 'patches': {patch} is no file in the checkout "
                              f"({REPO_ROOT})")
    for option in lists["kconfig"]:
        if parse_requirement(option) is None:
            raise ConfigError(f"{source}: key 'kconfig': {option!r} is not {REQUIREMENT_SYNTAX}")
    if (lists["patches"] or lists["kconfig"]) and not str(data.get("kernel", "")).startswith(
            BUILD_PREFIX):
        raise ConfigError(f"{source}: keys 'patches' and 'kconfig' describe a build; set "
                          f"'kernel' to {BUILD_PREFIX}SOURCE (e.g. {BUILD_PREFIX}debian:7.3)")
    entries: list[object] = data.get("expected_failure", [])  # type: ignore[assignment]
    baselines = tuple(_baseline(entry, f"{source}: expected_failure[{i}]")
                      for i, entry in enumerate(entries))
    values = {k: v for k, v in data.items() if k not in (*lists, "expected_failure")}
    return Lane(name=name, source=source, expected_failures=baselines,
                **lists, **values)  # type: ignore[arg-type]


def _baseline(entry: object, where: str) -> ExpectedFailure:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table ([[expected_failure]] with test, reason, "
                          "until)")
    check_keys(entry, _BASELINE_TYPES, where)
    missing = [k for k in ("test", "reason", "until") if not entry.get(k)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}: a baseline says which test, "
                          "why it fails, and what ends it")
    return ExpectedFailure(**entry)
