"""schemathesis against the served spec (/api-docs/openapi.json) of a real `jobq api`
process: generated requests for every operation; no 5xx, and every response (errors
included) must match the spec.

schemathesis' pytest plugin does not run under this pytest version, so each operation's
Hypothesis strategy is driven directly; the checks are schemathesis' own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ..conftest import migrated_sqlite
from .live import live_api

# Every operation the spec must contain; a new route shows up here or the test says so.
OPERATIONS = [
    "GET /dlq",
    "GET /health",
    "GET /jobs",
    "GET /jobs/{job_id}",
    "GET /jobs/{job_id}/errors",
    "GET /jobs/{job_id}/events",
    "GET /metrics",
    "GET /queues",
    "GET /ready",
    "GET /workers",
    "POST /dlq/requeue",
    "POST /jobs",
    "POST /jobs/bulk",
    "POST /jobs/{job_id}/cancel",
    "POST /jobs/{job_id}/retry",
    "POST /queues/{queue}/pause",
    "POST /queues/{queue}/resume",
]


# Reusing an Idempotency-Key with a different body must be refused with 422 (the issue and
# the IETF Idempotency-Key draft say so). Generated requests reuse keys at random, which this
# one stateless check reads as a valid request rejected; every other check still runs here.
EXCLUDED = {"POST /jobs": [positive_data_acceptance]}

# GET /jobs/{job_id}/events streams until its job finishes or timeout_s passes (default 300 s,
# up to 3600), and no worker runs here. Most generated ids are unknown (an instant 404), but
# one can name a queued job that POST /jobs cases created (job_id=1 is among the first values
# tried). So each case's timeout_s is capped at STREAM_BOUND_S (set when absent; smaller
# values and non-numbers are sent as generated): 30 cases take a few seconds at worst, and a
# stream that does open is still checked, event by event, against the spec.
STREAM_BOUND_S = 0.2


def bound_the_stream(case: Any) -> None:
    query = dict(case.query or {})
    value = query.get("timeout_s")
    if value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and value > STREAM_BOUND_S
    ):
        query["timeout_s"] = STREAM_BOUND_S
    case.query = query


ADJUSTED = {"GET /jobs/{job_id}/events": bound_the_stream}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = migrated_sqlite(Path(tmp_path_factory.mktemp("spec")) / "jobq.db")
    with live_api(url) as (base, _process):
        yield base


@pytest.fixture(scope="module")
def operations(base_url: str) -> dict[str, Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api-docs/openapi.json")
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[operation.label] = operation
    return found


def test_the_spec_lists_every_operation(operations: dict[str, Any]) -> None:
    assert sorted(operations) == OPERATIONS


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_the_spec(
    label: str, operations: dict[str, Any], base_url: str
) -> None:
    operation = operations[label]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if label in ADJUSTED:
            ADJUSTED[label](case)
        case.call_and_validate(base_url=base_url, excluded_checks=EXCLUDED.get(label, []))

    check()
