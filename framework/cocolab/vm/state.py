"""A VM's lifecycle states and the only ways between them.

    CREATED ──launch()──> LAUNCHING ──────────────────────────────> RUNNING ──> SHUT_DOWN
                            │  ├── SAVING ──> LAUNCHING (resumed)     ↑
                            │  └── RESTORING ─────────────────────────┘
                            └── any failure, in any boot state ──> FAILED ──> (stays)

LAUNCHING: QEMU is starting, or the guest boots to READY and SSH. SAVING: the guest is paused
and its state streams to a file. RESTORING: QEMU loads a snapshot, cocolab writes back what it
lost, then reseeds the guest and checks it. A move not in TRANSITIONS is a RigBug.
"""

from __future__ import annotations

import enum


class VMState(enum.Enum):
    CREATED = "created"
    LAUNCHING = "launching"
    SAVING = "saving"
    RESTORING = "restoring"
    RUNNING = "running"
    SHUT_DOWN = "shut down"
    FAILED = "failed"

    @property
    def booting(self) -> bool:
        return self in (VMState.LAUNCHING, VMState.SAVING, VMState.RESTORING)


TRANSITIONS: dict[VMState, frozenset[VMState]] = {
    VMState.CREATED: frozenset({VMState.LAUNCHING, VMState.SHUT_DOWN}),
    VMState.LAUNCHING: frozenset({VMState.SAVING, VMState.RESTORING, VMState.RUNNING,
                                  VMState.FAILED}),
    VMState.SAVING: frozenset({VMState.LAUNCHING, VMState.FAILED}),
    VMState.RESTORING: frozenset({VMState.RUNNING, VMState.FAILED}),
    VMState.RUNNING: frozenset({VMState.SHUT_DOWN}),
    VMState.SHUT_DOWN: frozenset(),
    VMState.FAILED: frozenset(),
}
