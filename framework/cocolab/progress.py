"""Long work said as it happens: fetching a kernel, building the guest image, installing a
tree's modules, saving a snapshot. Each step prints a line when it starts and one when it
ends, with how long it took and how much it made, so a first run is never silent.

Lower layers call `step()`; who hears it is the front end's choice (`set_sink`): the pytest
plugin writes through its terminal reporter with output capture lifted, the CLI to stderr.
Without a sink the lines go to this module's logger only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger(__name__)
Sink = Callable[[str], None]
_sink: Sink | None = None


def set_sink(sink: Sink | None) -> Sink | None:
    """Send progress lines to `sink` (None: the log only); returns the previous sink."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def say(line: str) -> None:
    LOG.info("%s", line)
    if _sink is not None:
        _sink(f"cocolab: {line}")


@dataclass
class Step:
    what: str
    done: str = ""
    """What the step made, said at its end ("3 packages, 104.2 MB")."""

    def part(self, index: int, total: int, what: str) -> None:
        """How far along: part `index` of `total`."""
        say(f"{self.what}: {what} ({index}/{total})")


@contextmanager
def step(what: str) -> Iterator[Step]:
    """`what` starts now; on leaving, it is done (or failed) after so many seconds."""
    current = Step(what)
    say(f"{what} ...")
    start = time.monotonic()
    try:
        yield current
    except BaseException:
        say(f"{what}: failed after {time.monotonic() - start:.1f}s")
        raise
    took = time.monotonic() - start
    say(f"{what}: done in {took:.1f}s" + (f" ({current.done})" if current.done else ""))


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"
