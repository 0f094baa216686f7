"""A JSON document with one value changed, for the malformed-input tables of the unit tests."""

from __future__ import annotations

import copy
from typing import Any

REMOVED = KeyError
"""As the value: remove the key instead."""


def edited(data: Any, path: str, value: Any) -> Any:
    """A deep copy of `data` with the value at `path` (dot-separated keys; digits index
    lists) set to `value`, or removed if `value` is REMOVED."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is REMOVED:
        del node[last]
    else:
        node[last] = value
    return data
