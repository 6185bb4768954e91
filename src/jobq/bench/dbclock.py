"""Times as the database records them, so a span cannot be flattered by client clocks."""

from __future__ import annotations

import sqlite3
import time

import psycopg


def activity_span(url: str) -> tuple[float, float]:
    """(first job started, last job finished) as epoch seconds."""
    query = "SELECT {first}, {last} FROM jobq_jobs"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(
                query.format(first="min(started_at)", last="max(finished_at)")
            ).fetchone()
    else:
        with psycopg.connect(url) as pg:
            row = pg.execute(
                query.format(
                    first="extract(epoch FROM min(started_at))::float8",
                    last="extract(epoch FROM max(finished_at))::float8",
                )
            ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise RuntimeError("no finished jobs to measure")
    return float(row[0]), float(row[1])


def database_now(url: str) -> float:
    if url.startswith("sqlite"):
        return time.time()  # the SQLite driver stamps rows with this clock
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def finish_times(url: str) -> list[float]:
    """Every job's finished_at as epoch seconds, in order."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT finished_at FROM jobq_jobs ORDER BY finished_at")
            return [float(r[0]) for r in rows]
    with psycopg.connect(url) as pg:
        cur = pg.execute(
            "SELECT extract(epoch FROM finished_at)::float8 FROM jobq_jobs ORDER BY finished_at"
        )
        return [float(r[0]) for r in cur]
