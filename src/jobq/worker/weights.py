"""Weighted queues: how a worker splits each claim's free slots across the queues it serves.

``--queues critical:6,default:3,low:1`` asks for claims in proportion 6:3:1 while each queue
has work. The split is a smooth weighted round robin whose credits carry over from one claim
to the next: a claim of 2 slots cannot be split 6:3:1, but a hundred claims of 2 are, and
the low queue gets its slot every tenth one, however small the claims. A queue that had no
work takes no part in the round (it earns no credit while empty, so it cannot come back and
take a burst of slots from the others), and the slots it would have had go to the queues
that still have work.

Pure (no I/O): the worker asks ``split`` how many slots each queue gets, claims per queue
with the drivers' ordinary claim, and tells the planner which queues came back short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def parse_queues(spec: str) -> tuple[list[str] | None, dict[str, int] | None]:
    """``"a,b"`` -> (["a", "b"], None): strict priority across them, as always.
    ``"a:6,b:3"`` -> (["a", "b"], {"a": 6, "b": 3}): weighted. Mixing both forms is
    refused, as is a weight below 1."""
    names: list[str] = []
    weights: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, weight = item.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"queue name missing in {item!r}")
        if name in names:
            raise ValueError(f"queue {name!r} is listed twice")
        names.append(name)
        if sep:
            try:
                weights[name] = int(weight)
            except ValueError:
                raise ValueError(f"weight of queue {name!r} must be a whole number") from None
    if not names:
        return None, None
    if weights and len(weights) != len(names):
        raise ValueError("give every queue a weight (a:6,b:3) or none (a,b)")
    if weights:
        check_weights(weights)
        return names, weights
    return names, None


def check_weights(weights: Mapping[str, int]) -> None:
    if not weights:
        raise ValueError("weighted queues need at least one queue")
    for name, weight in weights.items():
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ValueError(f"weight of queue {name!r} must be a whole number >= 1")


class WeightedPlanner:
    """Smooth weighted round robin over the queues that have work, one slot at a time."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        check_weights(weights)
        self.weights = dict(weights)
        self._credit = dict.fromkeys(self.weights, 0)
        self._empty: set[str] = set()

    @property
    def queues(self) -> list[str]:
        return list(self.weights)

    def split(self, slots: int, among: Iterable[str] | None = None) -> dict[str, int]:
        """How many of ``slots`` each queue gets (queues with 0 left out), in order of
        weight. ``among``: only these queues (default: those not marked empty; when every
        queue is marked empty, all of them, so that new work is still found)."""
        if among is None:
            active = [q for q in self.weights if q not in self._empty] or list(self.weights)
        else:
            active = [q for q in self.weights if q in set(among)]
        shares: dict[str, int] = {}
        if not active or slots <= 0:
            return shares
        total = sum(self.weights[q] for q in active)
        for _ in range(slots):
            for q in active:
                self._credit[q] += self.weights[q]
            chosen = max(active, key=lambda q: self._credit[q])
            self._credit[chosen] -= total
            shares[chosen] = shares.get(chosen, 0) + 1
        return dict(sorted(shares.items(), key=lambda kv: -self.weights[kv[0]]))

    def mark_empty(self, queue: str) -> None:
        """This queue had fewer claimable jobs than it was asked for: skip it until
        ``mark_has_work`` (a wake-up for it, or the next poll)."""
        self._empty.add(queue)

    def mark_has_work(self, queue: str | None = None) -> None:
        """New work in ``queue`` (None: in any queue, e.g. a poll is due)."""
        if queue is None:
            self._empty.clear()
        else:
            self._empty.discard(queue)

    def is_empty(self, queue: str) -> bool:
        return queue in self._empty
