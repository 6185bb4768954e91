"""Starting and stopping real ``jobq worker`` processes for tests."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from jobq.bench.stopping import stop_processes

REPO = Path(__file__).resolve().parents[2]


def start_workers(
    db_url: str,
    count: int,
    *,
    app: str | None = "tests.worker.process_app:jq",  # None: the demo kinds
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    environment = {
        **os.environ,
        "JOBQ_DATABASE_URL": db_url,
        "JOBQ_POLL_INTERVAL_S": "0.2",
        "JOBQ_HEARTBEAT_S": "0.5",
        "JOBQ_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "jobq.cli", "worker", *([app] if app else []), *args],
            cwd=REPO,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]


def stop_workers(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 60) -> list[int]:
    """SIGTERM each, wait, return exit codes (killing any that overstay)."""
    return stop_processes(processes, timeout)


def deaths(processes: Sequence[subprocess.Popen[bytes]], tail: int = 4000) -> str:
    """Which of ``processes`` have exited, with exit code and the end of stderr (for an
    assertion message); empty if all are alive. Only reads the stderr of dead processes, whose
    pipe is at EOF, so it never blocks."""
    reports = []
    for index, p in enumerate(processes):
        code = p.poll()
        if code is None:
            continue
        err = p.stderr.read() if p.stderr is not None else b""
        text = err.decode("utf-8", "replace")[-tail:] if err else "(no stderr)"
        reports.append(
            f"worker #{index} (pid {p.pid}) exited with code {code}; stderr tail:\n{text}"
        )
    return "\n".join(reports)


def sql(db_url: str, statement: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Run one statement on the test database from the test process (sync, autocommit)."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=30) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


async def count_is(db_url: str, query: str, expected: int) -> bool:
    """Probe for `eventually`: the single number ``query`` returns equals ``expected``."""
    rows = await asyncio.to_thread(sql, db_url, query)
    return rows[0][0] == expected


async def at_least(db_url: str, query: str, expected: int) -> bool:
    rows = await asyncio.to_thread(sql, db_url, query)
    value = rows[0][0]
    return isinstance(value, int) and value >= expected


async def started(db_url: str, processes: Sequence[subprocess.Popen[bytes]]) -> bool:
    """Probe for `eventually`: each live process has registered as a worker, so it is past
    start-up and a SIGTERM now is a graceful stop (a Python process signalled while it is
    still importing dies of the signal, before jobq could handle anything)."""
    pids = {row[0] for row in await asyncio.to_thread(sql, db_url, "SELECT pid FROM jobq_workers")}
    return all(p.pid in pids for p in processes if p.poll() is None)


RUNNING = "SELECT count(*) FROM jobq_jobs WHERE status = 'running'"
