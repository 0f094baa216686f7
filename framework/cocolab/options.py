"""Command-line options shared by the pytest plugin and the cocolab CLI: help written once."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cocolab.constants import ACCELS
from cocolab.errors import ConfigError


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--lane", "lane name from qemu-configs/lanes/ or a .toml path "
           "(env COCOLAB_LANE; default: default)", (("metavar", "NAME"),)),
    Option("--kernel", "kernel to boot: debian:<suite>[:<package>], a bzImage, or a build tree "
           "(env COCOLAB_KERNEL; default: the lane's)", (("metavar", "SPEC"),)),
    Option("--kernel-config", "the .config of a --kernel bzImage (default: beside it)",
           (("metavar", "FILE"),)),
    Option("--modules", "modules of a --kernel bzImage: a dir holding lib/modules/<release> "
           "(default: beside it)", (("metavar", "DIR"),)),
    Option("--module-debug", "a --kernel build tree's modules keep their debug info in the "
           "guest (for drgn or gdb there); default: stripped, as INSTALL_MOD_STRIP=1 does",
           (("action", "store_true"),)),
    Option("--qemu", "qemu-system-x86_64 binary (env COCOLAB_QEMU; default: the lane's, "
           "else PATH)", (("metavar", "PATH"),)),
    Option("--firmware", "firmware (-bios) for confidential lanes: an OVMF with TDVF or SEV "
           "support (default: the lane's, else the usual distribution paths)",
           (("metavar", "FILE"),)),
    Option("--accel", "accelerator: auto (KVM if the kernel boots under it, else TCG), kvm, tcg "
           "(env COCOLAB_ACCEL)", (("choices", ACCELS),)),
    Option("--append", "extra kernel command line for every guest (repeatable)",
           (("action", "append"), ("default", []), ("metavar", "WORDS"))),
    Option("--boot-timeout", "seconds a guest may take to be ready (default: 120)",
           (("type", float), ("default", 120.0), ("metavar", "SECONDS"))),
    Option("--no-snapshots", "boot every VM cold instead of restoring it from a snapshot of "
           "its first boot (kept in the cache across runs)", (("action", "store_true"),)),
    Option("--panic-on-warn", "boot every guest with panic_on_warn=1: a kernel WARNING ends "
           "the VM as a crash", (("action", "store_true"),)),
)


def split_append(values: Iterable[str]) -> tuple[str, ...]:
    """--append values as kernel command-line words, split by shell rules, so that
    `dyndbg="file vfio_pci_core.c +p"` stays one word (quotes removed, as the kernel's own
    parser removes them)."""
    words: list[str] = []
    for value in values:
        try:
            words += shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"--append {value!r}: {exc}; quote a word with spaces as "
                              "'name=\"a b\"'") from None
    return tuple(words)
