"""Kernels: parse a --kernel spec, locate or fetch the kernel, know its config and modules."""

from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.resolve import Kernel, resolve_kernel
from cocolab.kernel.spec import BuildTreeSpec, DebianSpec, ImageSpec, KernelSpec, parse_kernel_spec

__all__ = [
    "BuildTreeSpec",
    "DebianSpec",
    "ImageSpec",
    "Kconfig",
    "Kernel",
    "KernelSpec",
    "parse_kernel_spec",
    "resolve_kernel",
]
