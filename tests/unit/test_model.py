"""The transition table, pair by pair, and the SQL guards that must agree with it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from jobq.model import (
    CLAIMABLE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    JobStatus,
    can_transition,
    sources_of,
)

ALLOWED = {
    (JobStatus.QUEUED, JobStatus.RUNNING),
    (JobStatus.QUEUED, JobStatus.CANCELLED),
    (JobStatus.WAITING, JobStatus.QUEUED),
    (JobStatus.WAITING, JobStatus.CANCELLED),
    (JobStatus.RUNNING, JobStatus.SUCCEEDED),
    (JobStatus.RUNNING, JobStatus.RETRYING),
    (JobStatus.RUNNING, JobStatus.FAILED),
    (JobStatus.RUNNING, JobStatus.CANCELLED),
    (JobStatus.RUNNING, JobStatus.QUEUED),
    (JobStatus.RETRYING, JobStatus.RUNNING),
    (JobStatus.RETRYING, JobStatus.CANCELLED),
    (JobStatus.FAILED, JobStatus.QUEUED),
    (JobStatus.CANCELLED, JobStatus.QUEUED),
}


@pytest.mark.parametrize(
    ("current", "new"), list(itertools.product(JobStatus, JobStatus)), ids=lambda s: str(s)
)
def test_every_pair(current: JobStatus, new: JobStatus) -> None:
    assert can_transition(current, new) == ((current, new) in ALLOWED)


def test_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


def test_succeeded_is_final_and_terminal_statuses_only_requeue() -> None:
    assert TRANSITIONS[JobStatus.SUCCEEDED] == frozenset()
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] <= {JobStatus.QUEUED}


def test_sources_of_running_are_the_claimable_statuses() -> None:
    assert sources_of(JobStatus.RUNNING) == CLAIMABLE_STATUSES


SQL_FILES = sorted(Path(__file__).parents[2].glob("src/jobq/storage/*/queries.sql"))
# Each named query that changes status: (target status, statuses its WHERE guard allows).
GUARDED = {
    "claim_batch_by_queue": (JobStatus.RUNNING, {"queued", "retrying"}),
    "claim_batch_any_queue": (JobStatus.RUNNING, {"queued", "retrying"}),
    "claim_ids": (JobStatus.RUNNING, {"queued", "retrying"}),
    "complete_many": (JobStatus.SUCCEEDED, {"running"}),
    "hand_back": (JobStatus.QUEUED, {"running"}),
    "cancel_pending": (JobStatus.CANCELLED, {"queued", "waiting", "retrying"}),
    "requeue": (JobStatus.QUEUED, {"failed", "cancelled"}),
}
# Claims only one dialect has (SQLite claims from one queue by its own statement).
GUARDED_IN: dict[str, dict[str, tuple[JobStatus, set[str]]]] = {
    "postgres": {},
    "sqlite": {"claim_batch_one_queue": (JobStatus.RUNNING, {"queued", "retrying"})},
}
GUARDED_QUERIES = [
    (dialect, name, guard)
    for dialect in ("postgres", "sqlite")
    for name, guard in sorted({**GUARDED, **GUARDED_IN[dialect]}.items())
]


def test_the_guarded_queries_cover_both_sql_files() -> None:
    assert sorted(p.parent.name for p in SQL_FILES) == sorted(GUARDED_IN)


@pytest.mark.parametrize(
    ("dialect", "query_name", "guard"),
    GUARDED_QUERIES,
    ids=[f"{d}-{n}" for d, n, _ in GUARDED_QUERIES],
)
def test_sql_guards_match_the_table(
    dialect: str, query_name: str, guard: tuple[JobStatus, set[str]]
) -> None:
    """The WHERE guard of each status-changing query allows only moves the table allows."""
    from jobq.storage.sqlfiles import load_queries

    sql = load_queries(dialect)[query_name]
    target, guarded_sources = guard
    found = set(re.findall(r"status\s*(?:=|IN)\s*\(?([^)\n]*)", sql.split("WHERE", 1)[1]))
    quoted = {s for part in found for s in re.findall(r"'(\w+)'", part)}
    assert guarded_sources <= quoted, f"{query_name} guard should name {guarded_sources}"
    for source in guarded_sources:
        assert can_transition(JobStatus(source), target), f"{source} -> {target}"
