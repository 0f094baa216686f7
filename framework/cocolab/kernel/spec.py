"""What a user may pass as --kernel, parsed without touching the network or QEMU.

Four forms:
  build:<source>               built by `cocolab build` from debian:X.Y or a kernel tree,
                               with the lane's patches and options
  debian:<suite>[:<package>]   a Debian kernel package, e.g. debian:trixie, debian:sid,
                               debian:bookworm:linux-image-6.12-amd64 (default package:
                               linux-image-amd64)
  <dir>                        a kernel build tree (arch/x86/boot/bzImage and .config in it)
  <file>                       a bzImage; config and modules beside it, or given explicitly
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cocolab.errors import ConfigError, said
from cocolab.kernel.build import check_source

DEFAULT_DEBIAN_PACKAGE = "linux-image-amd64"
_SUITE = re.compile(r"^[a-z][a-z0-9.-]*$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


@dataclass(frozen=True)
class DebianSpec:
    suite: str
    package: str = DEFAULT_DEBIAN_PACKAGE

    def __str__(self) -> str:
        if self.package == DEFAULT_DEBIAN_PACKAGE:
            return f"debian:{self.suite}"
        return f"debian:{self.suite}:{self.package}"


@dataclass(frozen=True)
class BuildTreeSpec:
    tree: Path
    module_debug: bool = False
    """Keep the debug info of the modules the guest carries (default: strip it)."""

    def __str__(self) -> str:
        return str(self.tree)


@dataclass(frozen=True)
class ImageSpec:
    image: Path
    config: Path | None = None
    modules: Path | None = None

    def __str__(self) -> str:
        return str(self.image)


@dataclass(frozen=True)
class SourceSpec:
    """A kernel `cocolab build` makes: SOURCE (debian:X.Y or a tree), patched, configured."""

    source: str
    patches: tuple[Path, ...] = ()
    kconfig: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"build:{self.source}" + "".join(f" + {p.name}" for p in self.patches)


KernelSpec = DebianSpec | BuildTreeSpec | ImageSpec | SourceSpec


def is_build_output(tree: Path) -> bool:
    """An O= directory (kbuild links its source as `source`): built already, used as it is."""
    return (tree / "source").is_symlink()


def _debian_spec(text: str, source: str) -> DebianSpec:
    """debian:SUITE or debian:SUITE:PACKAGE."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not _SUITE.match(parts[1]):
        raise ConfigError(
            f"{source}: {text!r} is not debian:<suite>[:<package>] "
            "(e.g. debian:trixie, debian:sid, debian:bookworm:linux-image-6.12-amd64)"
        )
    if len(parts) == 3:
        if not _PACKAGE.match(parts[2]):
            raise ConfigError(f"{source}: {parts[2]!r} is not a Debian package name")
        return DebianSpec(parts[1], parts[2])
    return DebianSpec(parts[1])


def parse_kernel_spec(
    text: str,
    *,
    config: str | None = None,
    modules: str | None = None,
    source: str = "--kernel",
    module_debug: bool = False,
) -> KernelSpec:
    """Parse `text` (as given by `source`, for messages) into a KernelSpec."""
    if text.startswith("build:"):
        if config or modules:
            raise ConfigError(f"--kernel-config/--modules: apply to a bzImage only, and "
                              f"{said(source, text)} is built with its own config")
        check_source(text.removeprefix("build:"), source)
        return SourceSpec(text.removeprefix("build:"))
    if text.startswith("debian:"):
        if config or modules:
            option = f"--kernel-config {config}" if config else f"--modules {modules}"
            raise ConfigError(f"{option}: applies to a bzImage only, and {said(source, text)} "
                              "is a Debian kernel, which brings its own config and modules")
        return _debian_spec(text, source)

    path = Path(text).expanduser()
    if path.is_dir():
        if config or modules:
            option = f"--kernel-config {config}" if config else f"--modules {modules}"
            raise ConfigError(f"{option}: applies to a bzImage only, and {said(source, text)} "
                              "is a build tree, whose own .config and modules are used")
        if not (path / "arch/x86/boot/bzImage").is_file():
            raise ConfigError(
                f"{source}: {text} is a directory without arch/x86/boot/bzImage; "
                "build it (make bzImage modules) or pass the bzImage file itself"
            )
        return BuildTreeSpec(path.resolve(), module_debug)
    if path.is_file():
        return ImageSpec(
            path.resolve(),
            Path(config).expanduser().resolve() if config else None,
            Path(modules).expanduser().resolve() if modules else None,
        )
    raise ConfigError(
        f"{source}: {text!r} is neither debian:<suite> nor an existing bzImage or build tree"
    )
