"""What the plugin keeps between hooks: its keys into config.stash and item.stash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cocolab.guest import Guest
from cocolab.guest.kernel_warnings import KernelWarning
from cocolab.pytest_plugin.markers import VMRequest
from cocolab.pytest_plugin.pool import VMPool
from cocolab.pytest_plugin.shard import ShardPlugin
from cocolab.rig import Rig

RIG = pytest.StashKey[Rig]()
POOL = pytest.StashKey[VMPool]()
RESULTS = pytest.StashKey[Path]()
ITEM_VM = pytest.StashKey[Guest]()
ITEM_REQUEST = pytest.StashKey[VMRequest]()
ITEM_BUNDLE = pytest.StashKey[Path]()
ITEM_CALL = pytest.StashKey[pytest.TestReport]()
ITEM_WARNINGS = pytest.StashKey[list[KernelWarning]]()
ITEM_SHARE = pytest.StashKey[bool]()
"""The test still holds its share of a shared VM (counted at collection, not yet released)."""
ITEM_RIG_FAILED = pytest.StashKey[bool]()
"""The rig failed the test (fixtures.rig_failure): not the kernel's verdict, whatever phase."""
GATES_ONLY = pytest.StashKey[bool]()
"""Collection for `cocolab kconfig`: a suite says what it gates on, and builds, boots and
fetches nothing it would need only to run (the kernel's own tests list their cases so)."""
SHARD = pytest.StashKey[ShardPlugin]()
STARTED = pytest.StashKey[str]()
SELECTED = pytest.StashKey[int]()
"""How many tests the run selected (after -k, -m and this shard's deselection)."""
WORKER_RIG = pytest.StashKey[list[str]]()
"""Under xdist: what the first worker that booted a VM booted it with (_rig_lines)."""
WORKER_SELECTION = pytest.StashKey[dict[str, Any]]()
"""Under xdist: the selection, shard and partition the workers collected (_selection)."""
