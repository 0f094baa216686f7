"""cocolab: boot real kernels under QEMU from pytest and test device security in them."""

__version__ = "0.1.0"
