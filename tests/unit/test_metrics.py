"""The worker's light histogram must expose exactly what prometheus_client's own Histogram
exposes for the same observations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from jobq.observability.metrics import JOB_BUCKETS, LoopHistogram


def _series(registry: CollectorRegistry) -> list[str]:
    # _created is a timestamp of when each series began; it differs between any two metrics.
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line and "_created" not in line
    ]


def test_loop_histogram_exposes_what_the_library_histogram_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    light = LoopHistogram("x_seconds", "Some time", ["kind"], buckets=JOB_BUCKETS, registry=ours)
    reference = Histogram("x_seconds", "Some time", ["kind"], buckets=JOB_BUCKETS, registry=theirs)
    # Values below, on, between and above the bounds, in two label sets.
    values = [0.0, 0.0005, 0.001, 0.0049, 0.005, 0.7, 1.0, 299.9, 300.0, 1800.0, 5000.0]
    for kind, factor in (("fast", 1.0), ("slow", 3.0)):
        for value in values:
            light.labels(kind).observe(value * factor)
            reference.labels(kind).observe(value * factor)
    exposed = _series(ours)
    assert any('le="+Inf"' in line for line in exposed)
    assert exposed == _series(theirs)


def test_loop_histogram_checks_its_labels() -> None:
    histogram = LoopHistogram(
        "y_seconds", "Other", ["queue"], buckets=(0.1, 1), registry=CollectorRegistry()
    )
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("a", "b")
