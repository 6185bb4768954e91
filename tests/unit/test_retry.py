"""Decorrelated jitter: bounds, growth, determinism with a seed, and the policy's decisions."""

from __future__ import annotations

import itertools
import random

import pytest

from jobq.errors import InvalidJobError
from jobq.retry import RetryPolicy, decorrelated_jitter


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("base", "cap"), [(1.0, 300.0), (0.5, 2.0), (0.0, 10.0), (5.0, 5.0)])
def test_delays_stay_within_base_and_cap(seed: int, base: float, cap: float) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 30):
        delay = decorrelated_jitter(attempt, base, cap, rng)
        assert base <= delay <= cap


def test_each_delay_is_at_most_three_times_the_previous() -> None:
    # Replaying the same seed gives the sequence the function walks internally.
    for seed in range(50):
        delays = [decorrelated_jitter(n, 1.0, 1e9, random.Random(seed)) for n in range(1, 12)]
        for previous, current in itertools.pairwise(delays):
            assert current <= max(1.0, previous * 3) + 1e-9


def test_same_seed_same_delays_different_seed_different_delays() -> None:
    first = [decorrelated_jitter(n, 1.0, 300.0, random.Random(7)) for n in range(1, 8)]
    again = [decorrelated_jitter(n, 1.0, 300.0, random.Random(7)) for n in range(1, 8)]
    other = [decorrelated_jitter(n, 1.0, 300.0, random.Random(8)) for n in range(1, 8)]
    assert first == again
    assert first != other


def test_delays_grow_on_average_until_the_cap() -> None:
    rng = random.Random(1)
    means = []
    for attempt in (1, 3, 6):
        samples = [decorrelated_jitter(attempt, 1.0, 10_000.0, rng) for _ in range(2000)]
        means.append(sum(samples) / len(samples))
    assert means[0] < means[1] < means[2]
    # Late attempts reach the cap often, but the jitter keeps drawing below it too.
    late = [decorrelated_jitter(40, 1.0, 60.0, rng) for _ in range(200)]
    assert 20 < sum(1 for d in late if d == 60.0) < 200


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        decorrelated_jitter(0, 1.0, 2.0)


def test_policy_retries_only_listed_errors_and_only_while_attempts_remain() -> None:
    policy = RetryPolicy(max_attempts=3, retry_for=(ConnectionError,))
    assert policy.should_retry(1, ConnectionError())
    assert policy.should_retry(2, ConnectionResetError())  # a subclass counts
    assert not policy.should_retry(3, ConnectionError())  # the last attempt
    assert not policy.should_retry(1, ValueError())


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_s": -1.0}, {"base_s": 5.0, "cap_s": 1.0}]
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidJobError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
