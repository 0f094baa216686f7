"""The guest's bounce buffers (swiotlb), as its debugfs shows them.

A confidential guest's devices may only reach shared memory, so its DMA goes through swiotlb
(kernel/dma/swiotlb.c); `io_tlb_used` counts the slots mapped now. A kernel that set up no
swiotlb pool has no `io_tlb_nslabs` (swiotlb_create_debugfs_files() makes the directory, and
its files only for a pool with slots; seen on 6.12: an empty swiotlb/ in a 1 GiB plain
guest): that is 0 slots, a plain answer. Anything else that keeps the count from being read
(debugfs not mounted, a pool whose count cannot be read, text that is no number) is a
PreconditionUnmet: the test could not ask, so it is neither a pass nor the kernel's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cocolab.errors import PreconditionUnmet

if TYPE_CHECKING:
    from cocolab.vm import VM

DEBUGFS = "/sys/kernel/debug"
DIR = f"{DEBUGFS}/swiotlb"
NSLABS = f"{DIR}/io_tlb_nslabs"
USED = f"{DIR}/io_tlb_used"


def used_slots(vm: VM) -> int:
    if not vm.run(f"grep -q ' {DEBUGFS} debugfs ' /proc/mounts").ok:
        raise PreconditionUnmet(f"debugfs is not mounted at {DEBUGFS}: the swiotlb count "
                                "cannot be read")
    if not vm.run(f"test -e {NSLABS}").ok:
        return 0  # no swiotlb pool set up at all
    read = vm.run(f"cat {USED}")
    text = read.stdout.strip()
    if not read.ok or not text.isdigit():
        raise PreconditionUnmet(f"{USED} could not be read as a number: {read}")
    return int(text)
