"""QEMU command lines: pure functions from a VM config to argv."""

from cocolab.qemu.argv import Runtime, VMConfig, build_argv, kernel_cmdline, relaunch_script

__all__ = ["Runtime", "VMConfig", "build_argv", "kernel_cmdline", "relaunch_script"]
