"""The in-guest CMA requester (guests/cma/cocolab-doe.c) as a test drives it: copied into the
guest once, run against one PCI function with the responder in a given personality, its
report read back a step at a time."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.spdm import Personality, Responder

if TYPE_CHECKING:
    from cocolab.guest import Guest

GUEST_REQUESTER = "/usr/local/bin/cocolab-doe"
GUEST_ROOT = "/etc/cocolab/cma-root.pem"
TIMEOUT_MS = 2000  # the stall personality waits 5 s; everything else answers in milliseconds
DOE_FEATURES_SINCE = (6, 15)  # "PCI/DOE: Expose DOE features via sysfs"


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass(frozen=True)
class Run:
    """One run of the guest requester: a report per step, the last one the end."""

    steps: list[dict[str, object]]
    returncode: int
    stderr: str

    @property
    def last(self) -> dict[str, object]:
        return self.steps[-1] if self.steps else {}

    @property
    def authenticated(self) -> bool:
        return self.returncode == 0 and self.last.get("step") == "done"

    def __str__(self) -> str:
        return "\n".join(json.dumps(s) for s in self.steps) + (f"\n{self.stderr}"
                                                                if self.stderr else "")


class Requester:
    """cocolab-doe in `vm`, pointed at `bdf`, whose SPDM traffic goes to `responder`."""

    def __init__(self, vm: Guest, responder: Responder, bdf: str) -> None:
        self.vm, self.responder, self.bdf = vm, responder, bdf
        # one round trip: the root written, and whether this VM has the requester yet
        placed = vm.run(f"mkdir -p {posixpath.dirname(GUEST_ROOT)} && cat > {GUEST_ROOT} && "
                        f"test -x {GUEST_REQUESTER}", stdin=responder.root_pem)
        if placed.returncode != 0:
            vm.put(vm.supplies.cma_requester(), GUEST_REQUESTER, mode=0o755)
            vm.run(f"test -s {GUEST_ROOT}", check=True)

    def run(self, personality: Personality | str = Personality.GOOD) -> Run:
        self.responder.set_personality(personality)
        result = self.vm.run(f"{GUEST_REQUESTER} {self.bdf} {GUEST_ROOT} {TIMEOUT_MS}",
                             timeout=60)
        steps = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        return Run(steps, result.returncode, result.stderr.strip())
