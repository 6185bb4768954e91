"""The weighted-queue planner: parsing, proportions across claims, no starvation."""

from __future__ import annotations

import pytest

from jobq import Settings
from jobq.worker.weights import WeightedPlanner, parse_queues


def test_parse_keeps_plain_lists_strict_and_reads_weights() -> None:
    assert parse_queues("a,b") == (["a", "b"], None)
    assert parse_queues("") == (None, None)
    assert parse_queues("critical:6, default:3 ,low:1") == (
        ["critical", "default", "low"],
        {"critical": 6, "default": 3, "low": 1},
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a:6,b", "every queue a weight"),
        ("a:0", ">= 1"),
        ("a:x", "whole number"),
        ("a,a", "twice"),
        (":3", "name missing"),
    ],
)
def test_parse_refuses_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_queues(spec)


def test_settings_read_weighted_queues() -> None:
    settings = Settings(queues="critical:6,low:1")
    assert settings.queue_list == ["critical", "low"]
    assert settings.queue_weights == {"critical": 6, "low": 1}
    with pytest.raises(ValueError, match="every queue a weight"):
        Settings(queues="critical:6,low")


@pytest.mark.parametrize("claim_size", [1, 2, 5, 13])
def test_small_claims_add_up_to_the_weights(claim_size: int) -> None:
    planner = WeightedPlanner({"critical": 6, "default": 3, "low": 1})
    totals = dict.fromkeys(planner.queues, 0)
    for _ in range(1000 // claim_size * 10):
        for queue, count in planner.split(claim_size).items():
            totals[queue] += count
    slots = sum(totals.values())
    # Smooth round robin is exact over every whole cycle of 10 slots: at most one cycle off.
    assert abs(totals["critical"] - slots * 0.6) <= 6
    assert abs(totals["default"] - slots * 0.3) <= 3
    assert abs(totals["low"] - slots * 0.1) <= 1


def test_a_light_queue_is_never_starved() -> None:
    planner = WeightedPlanner({"heavy": 100, "light": 1})
    got_light = [planner.split(1).get("light", 0) for _ in range(101)]
    assert sum(got_light) == 1


def test_an_empty_queue_gives_its_slots_to_the_others_and_earns_no_credit() -> None:
    planner = WeightedPlanner({"a": 1, "b": 1})
    planner.mark_empty("b")
    assert planner.split(10) == {"a": 10}
    planner.mark_has_work("b")
    # Back with work, b takes its share, not the ten slots it missed.
    assert planner.split(10) == {"a": 5, "b": 5}


def test_every_queue_empty_still_asks_every_queue() -> None:
    planner = WeightedPlanner({"a": 3, "b": 1})
    planner.mark_empty("a")
    planner.mark_empty("b")
    assert planner.split(4) == {"a": 3, "b": 1}


def test_a_worker_reads_a_queue_spec_string() -> None:
    from jobq import JobQueue

    jq = JobQueue("sqlite:///unused.db")
    assert jq.worker(queues="a:2,b:1", concurrency=2)._planner is not None
    assert jq.worker(queues="a,b", concurrency=2).queues == ["a", "b"]
