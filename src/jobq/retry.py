"""Retry backoff: decorrelated jitter.

Each delay is drawn uniformly between ``base`` and three times the previous delay, capped at
``cap``. Compared with plain exponential backoff with full jitter it keeps retries spread out
while still growing, and it never returns less than ``base``. The sequence for a job is a pure
function of the policy, the attempt number and the random source, so tests pass a seeded
``random.Random`` and get the same delays every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import InvalidJobError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task retries: attempts allowed, and the backoff between them (seconds)."""

    max_attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 300.0
    retry_for: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidJobError("max_attempts must be at least 1")
        if self.base_s < 0 or self.cap_s < self.base_s:
            raise InvalidJobError("retry backoff needs 0 <= base_s <= cap_s")

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """True when a failure of attempt number ``attempt`` (1-based) earns another try."""
        return attempt < self.max_attempts and isinstance(error, self.retry_for)

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Backoff before the attempt after ``attempt`` (1-based)."""
        return decorrelated_jitter(attempt, self.base_s, self.cap_s, rng)


def decorrelated_jitter(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """The delay after failed attempt ``attempt``: ``min(cap, uniform(base, 3 * previous))``.

    The previous delays are replayed from the same random source, so with a seeded ``rng`` the
    whole sequence is reproducible. Always within ``[base_s, cap_s]``.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    draw = rng.uniform if rng is not None else random.uniform
    delay = base_s
    for _ in range(attempt):
        delay = min(cap_s, draw(base_s, max(base_s, delay * 3)))
    return delay
