"""A seeded campaign: what a device publishes, mutated request by request from a seed, so
that any round can be run again exactly.

A `Campaign(seed, round)` draws one `Mutation` per request the device answers, from
`random.Random("SEED/ROUND")` (Python's Mersenne Twister, seeded from the string: the same on
every host and Python version): the used element's id and length, completing twice or
never, and the bytes the device writes (random data, a random blk status). Most requests are
answered as a good device would, so the driver keeps going and reaches the paths behind
the first surprise. Config space is not mutated: QEMU reads it once, when it realizes the
device (the `capacity-huge`-like personalities cover it at start-up).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Mutation(enum.Enum):
    NONE = "none"
    USED_LEN_ZERO = "used-len-0"
    USED_LEN_PLUS_ONE = "used-len+1"
    """One byte more than the driver's writable buffer."""
    USED_LEN_HUGE = "used-len-max"
    """0xffffffff."""
    USED_LEN_SHORT = "used-len-half"
    USED_ID_OUT_OF_RANGE = "used-id-num"
    """The queue size: no descriptor has it."""
    USED_ID_OTHER = "used-id-other"
    """Another index inside the queue (not the head that was made available)."""
    USED_ID_TWICE = "used-twice"
    NEVER_COMPLETE = "never-complete"
    DATA_RANDOM = "data-random"
    """The writable bytes (a blk request's status byte included) overwritten at random."""


WEIGHTS: dict[Mutation, int] = {
    Mutation.NONE: 12, Mutation.USED_LEN_ZERO: 2, Mutation.USED_LEN_PLUS_ONE: 2,
    Mutation.USED_LEN_HUGE: 2, Mutation.USED_LEN_SHORT: 2, Mutation.USED_ID_OUT_OF_RANGE: 1,
    Mutation.USED_ID_OTHER: 2, Mutation.USED_ID_TWICE: 1, Mutation.NEVER_COMPLETE: 1,
    Mutation.DATA_RANDOM: 3,
}
"""Half the requests, about, are answered as a good device would."""


@dataclass(frozen=True)
class Drawn:
    """What the campaign decided for one request: the mutation and its random numbers."""

    number: int
    """The request's place in the round, from 0."""
    mutation: Mutation
    other_id: int
    data: bytes

    def __str__(self) -> str:
        return f"#{self.number} {self.mutation.value}"


class Campaign:
    """The mutations of one round. Thread-safe enough for one serving thread."""

    def __init__(self, seed: int, round_: int) -> None:
        self.seed, self.round = seed, round_
        self._random = random.Random(f"{seed}/{round_}")
        self._count = 0
        self.drawn: list[Drawn] = []

    @property
    def name(self) -> str:
        return f"seed {self.seed} round {self.round}"

    def next(self, num: int, writable: int) -> Drawn:
        """The mutation of the next request, on a queue of `num` entries whose chain has
        `writable` bytes for the device. Always draws the same numbers in the same order,
        whatever the mutation, so a round is one sequence."""
        choices, weights = zip(*WEIGHTS.items(), strict=True)
        mutation = self._random.choices(choices, weights)[0]
        other = self._random.randrange(max(num, 1))
        data = self._random.randbytes(min(writable, 4096))
        drawn = Drawn(self._count, mutation, other, data)
        self._count += 1
        self.drawn.append(drawn)
        return drawn

    def summary(self) -> str:
        """'12 requests: 7 none, 2 used-len-0, ...'"""
        counts: dict[str, int] = {}
        for d in self.drawn:
            counts[d.mutation.value] = counts.get(d.mutation.value, 0) + 1
        parts = ", ".join(f"{n} {name}" for name, n in sorted(counts.items(),
                                                              key=lambda kv: -kv[1]))
        return f"{len(self.drawn)} requests" + (f": {parts}" if parts else "")


def used_element(drawn: Drawn, head: int, length: int, writable: int,
                 num: int) -> tuple[int, int, int]:
    """The (id, len, times) published for a request the device answered with `length`."""
    match drawn.mutation:
        case Mutation.USED_LEN_ZERO:
            return head, 0, 1
        case Mutation.USED_LEN_PLUS_ONE:
            return head, writable + 1, 1
        case Mutation.USED_LEN_HUGE:
            return head, 0xFFFFFFFF, 1
        case Mutation.USED_LEN_SHORT:
            return head, length // 2, 1
        case Mutation.USED_ID_OUT_OF_RANGE:
            return num, length, 1
        case Mutation.USED_ID_OTHER:
            other = drawn.other_id if drawn.other_id != head else (head + 1) % max(num, 1)
            return other, length, 1
        case Mutation.USED_ID_TWICE:
            return head, length, 2
    return head, length, 1
