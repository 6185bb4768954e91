"""Real `jobq api` processes: idempotency agreed across processes through the database, and
bounded memory under a 429 burst."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import httpx
import pytest

from ..worker.processes import sql
from .live import live_api


@pytest.mark.parametrize("concurrent", [10, 100])
async def test_one_key_over_two_api_processes_makes_one_job(pg_url: str, concurrent: int) -> None:
    with live_api(pg_url) as (first, _), live_api(pg_url) as (second, _):
        bases = itertools.cycle([first, second])
        body = {"kind": "send_email", "payload": {"to": "a@b.c"}}
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{next(bases)}/jobs", json=body, headers={"Idempotency-Key": "k"})
                    for _ in range(concurrent)
                )
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] * (concurrent - 1) + [201]
            replays = [r for r in responses if r.status_code == 200]
            assert all(r.headers["idempotent-replayed"] == "true" for r in replays)
            assert len({r.json()["id"] for r in responses}) == 1

            others = await asyncio.gather(
                *(
                    client.post(
                        f"{next(bases)}/jobs", json=body, headers={"Idempotency-Key": f"k{i}"}
                    )
                    for i in range(concurrent)
                )
            )
            assert [r.status_code for r in others] == [201] * concurrent
            assert len({r.json()["id"] for r in others}) == concurrent
    assert sql(pg_url, "SELECT count(*) FROM jobq_jobs WHERE idempotency_key = 'k'") == [(1,)]
    assert sql(pg_url, "SELECT count(*) FROM jobq_jobs") == [(concurrent + 1,)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_burst_beyond_the_depth_limit_gets_429_and_memory_stays_flat(
    pg_url: str,
) -> None:
    limit = 100
    with live_api(pg_url, JOBQ_MAX_QUEUE_DEPTH=str(limit)) as (base, process):
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def post_many(count: int) -> list[int]:
                replies = await asyncio.gather(
                    *(
                        client.post(f"{base}/jobs", json={"kind": "send_email", "queue": "q"})
                        for _ in range(count)
                    )
                )
                for reply in replies:
                    if reply.status_code == 429:
                        assert int(reply.headers["retry-after"]) >= 1
                return [r.status_code for r in replies]

            warmup = await post_many(300)  # fills the queue and warms every code path
            before = rss_kib(process.pid)
            burst: list[int] = []
            for _ in range(10):
                burst += await post_many(400)
            after = rss_kib(process.pid)
    print(f"\nAPI RSS before burst {before} KiB, after 4,000 requests {after} KiB")
    assert warmup.count(201) <= limit + 32  # the gate may overshoot by one refresh window
    assert burst.count(429) >= 3900
    waiting = sql(pg_url, "SELECT count(*) FROM jobq_jobs WHERE status = 'queued'")[0][0]
    assert isinstance(waiting, int) and limit <= waiting <= limit + 32
    assert abs(after - before) <= 0.2 * before, (before, after)


async def test_sigterm_ends_open_event_streams_instead_of_waiting_for_them(
    sqlite_url: str,
) -> None:
    """uvicorn waits for open responses before it stops; an event stream never ends by itself
    while its job waits. SIGTERM ends the streams (with a timeout event) so the process exits
    long before the 300 s grace period set here."""
    with live_api(sqlite_url, JOBQ_SHUTDOWN_GRACE_S="300") as (base, process):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            job = (await client.post("/jobs", json={"kind": "send_email"})).json()
            events: list[str] = []
            async with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        events.append(line.removeprefix("event:").strip())
                        if len(events) == 1:  # the stream is open: stop the server
                            process.send_signal(signal.SIGTERM)
            # The loop ended because the server closed the stream.
            assert events == ["status", "timeout"]
        assert await asyncio.to_thread(process.wait, 60) == 0
