"""The fast Job builders the drivers use for result rows must make exactly what Job's own
constructor makes: same fields, same values, still frozen."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from jobq.model import Job, JobStatus
from jobq.storage.base import NewJob
from jobq.storage.common import JOB_FIELDS, job_from_values, queued_job


def test_job_from_values_equals_the_constructor_for_every_field() -> None:
    # A distinct value per field, so a field written into another's slot shows.
    values = [f"value-{i}" for i in range(len(JOB_FIELDS))]
    built = job_from_values(values)
    assert type(built) is Job
    assert built == Job(*values)
    assert [getattr(built, name) for name in JOB_FIELDS] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = JobStatus.FAILED  # type: ignore[misc]


def test_job_from_values_refuses_a_short_row() -> None:
    with pytest.raises(ValueError, match="27 fields, not 3"):
        job_from_values(["only", "three", "values"])


def test_queued_job_equals_the_constructor() -> None:
    now = datetime.now(UTC)
    later = now + timedelta(seconds=30)
    new = NewJob(
        kind="send",
        payload={"to": "x"},
        queue="mail",
        priority=7,
        run_at=later,
        max_attempts=3,
        tenant="acme",
        timeout_s=2,
        request_id="req-1",
    )
    built = queued_job(41, new, {"to": "x"}, later, now)
    expected = Job(
        id=41,
        queue="mail",
        kind="send",
        payload={"to": "x"},
        status=JobStatus.QUEUED,
        priority=7,
        run_at=later,
        attempt=0,
        max_attempts=3,
        created_at=now,
        updated_at=now,
        tenant="acme",
        timeout_s=2.0,
        request_id="req-1",
    )
    assert built == expected
    assert type(built.timeout_s) is float
