"""Plain batches take their ids before writing (PostgreSQL: from the sequence, then COPY;
SQLite: the next free ids under the write lock, then executemany). Producers in several
processes at once must still get distinct ids, each matching the row it names."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from jobq.storage import connect
from jobq.storage.base import ListParams, NewJob

PRODUCERS = 3
BATCHES = 30
BATCH = 150  # above PostgreSQL's COPY threshold


def produce(url: str, producer: int, start: Any) -> list[tuple[int, int, int]]:
    """Enqueue BATCHES plain batches, each once every producer is ready for it; (id,
    producer, n) for every job, as returned."""

    async def run() -> list[tuple[int, int, int]]:
        driver = connect(url)
        try:
            await driver.ping()  # connected before the race starts
            returned: list[tuple[int, int, int]] = []
            for batch in range(BATCHES):
                # Every batch starts a new round of the race: otherwise, on SQLite, one
                # producer can take the write lock again and again while the others sleep in
                # the busy handler, and the producers run one after another.
                start.wait()
                jobs = [
                    NewJob(kind="k", payload={"p": producer, "n": batch * BATCH + i})
                    for i in range(BATCH)
                ]
                for job in await driver.enqueue_many(jobs):
                    returned.append((job.id, job.payload["p"], job.payload["n"]))
            return returned
        finally:
            await driver.close()

    return asyncio.run(run())


async def test_producers_in_several_processes_get_distinct_ids(db_url: str) -> None:
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, ProcessPoolExecutor(PRODUCERS, mp_context=spawn) as pool:
        start = manager.Barrier(PRODUCERS)
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, produce, db_url, p, start) for p in range(PRODUCERS))
        )
    returned = sorted(row for rows in results for row in rows)
    # The producers really raced: each one's ids are interleaved with another's.
    spans = [(min(r[0] for r in rows), max(r[0] for r in rows)) for rows in results]
    assert all(
        any(lo < o_hi and o_lo < hi for o_lo, o_hi in spans if (o_lo, o_hi) != (lo, hi))
        for lo, hi in spans
    ), spans
    assert len(returned) == PRODUCERS * BATCHES * BATCH
    assert len({job_id for job_id, _, _ in returned}) == len(returned)
    driver = connect(db_url)
    try:
        stored: list[tuple[int, int, int]] = []
        while page := await driver.list_jobs(
            ListParams(limit=1000, before_id=stored[-1][0] if stored else None)
        ):
            stored += [(j.id, j.payload["p"], j.payload["n"]) for j in page]
    finally:
        await driver.close()
    assert sorted(stored) == returned  # every id names the row its producer was told about
