"""A running VM: QEMU process, QMP, serial console and SSH, with a lifecycle."""

from cocolab.vm.console import Console, ConsoleResult
from cocolab.vm.machine import VM, VMState
from cocolab.vm.ssh import CommandFailed, CommandResult

__all__ = ["VM", "CommandFailed", "CommandResult", "Console", "ConsoleResult", "VMState"]
