"""The CMA suite's fixture: the guest requester against the VM's SPDM NVMe (topology
nvme-spdm), its responder put back to good after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cocolab.guest import Guest
from cocolab.guest.cma import Requester
from cocolab.spdm import Personality


@pytest.fixture
def requester(vm: Guest) -> Iterator[Requester]:
    responder = vm.spdm["spdm-disk"]
    yield Requester(vm, responder, vm.topology.bdf("spdm-disk"))
    responder.set_personality(Personality.GOOD)
