"""Group commit: concurrent one-job enqueues through the front door share INSERTs (see
jobq/batching.py), and each caller still gets its own job, outcome or error."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from jobq import EnqueueOutcome, JobQueue, Settings
from jobq.errors import DatabaseUnavailableError, InvalidJobError
from jobq.model import Job
from jobq.storage.base import Enqueued, NewJob


class Inserts:
    """Stands in front of the driver's ``enqueue``: records the size of each batch it is
    given and, while ``hold`` is true, holds each batch there (sent, not yet answered) until
    its event in ``held`` is set."""

    def __init__(self, jq: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.hold = False
        self.held: list[asyncio.Event] = []
        self._sent = asyncio.Condition()
        real = jq.driver.enqueue

        async def enqueue(jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
            self.sizes.append(len(jobs))
            release = asyncio.Event()
            if not self.hold:
                release.set()
            async with self._sent:
                self.held.append(release)
                self._sent.notify_all()
            await release.wait()
            return await real(jobs, connection=connection)

        monkeypatch.setattr(jq.driver, "enqueue", enqueue)

    async def until_sent(self, count: int) -> None:
        """Until ``count`` batches have been sent in all."""
        async with self._sent:
            await asyncio.wait_for(self._sent.wait_for(lambda: len(self.held) >= count), 10)

    def release_all(self) -> None:
        self.hold = False
        for release in self.held:
            release.set()


async def stored(jq: JobQueue) -> dict[int, Any]:
    return {job.id: job.payload for job in await jq.list(limit=1000)}


async def test_concurrent_defers_share_inserts_and_are_all_stored(
    jq: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @jq.task
    async def note(ctx: object, n: int) -> None:
        return None

    inserts = Inserts(jq, monkeypatch)
    jobs = await asyncio.gather(*(note.defer(n) for n in range(200)))
    assert [job.payload for job in jobs] == [{"n": n} for n in range(200)]  # each its own
    assert len({job.id for job in jobs}) == 200
    assert sum(inserts.sizes) == 200
    assert len(inserts.sizes) < 20, inserts.sizes  # far fewer inserts than jobs
    assert await stored(jq) == {job.id: job.payload for job in jobs}


async def test_keyed_jobs_go_alone_and_each_caller_gets_its_own_outcome(
    jq: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs with an idempotency or unique key never share an insert: a batch with keys is
    answered after its INSERT committed, and a lost race on a key then must not reach the
    callers whose jobs were stored. Plain jobs arriving together do share one."""
    first = await jq.enqueue("k", {"n": 1}, idempotency_key="order-1")
    holder = await jq.enqueue("k", {"n": 2}, unique_key="refresh")
    inserts = Inserts(jq, monkeypatch)
    inserts.hold = True
    ahead = asyncio.create_task(jq.enqueue("k", {"n": 0}))  # alone: nothing was in flight
    await inserts.until_sent(1)  # the plain calls below gather behind it
    asked = [
        jq.new_job("k", {"n": 1}, idempotency_key="order-1"),  # the same job again
        jq.new_job("k", {"n": 9}, idempotency_key="order-1"),  # another job, same key
        jq.new_job("k", {"n": 3}, unique_key="refresh"),  # the key's holder is active
        jq.new_job("k", {"n": 4}),
        jq.new_job("k", {"n": 5}, idempotency_key="order-2"),  # two callers, one new key
        jq.new_job("k", {"n": 5}, idempotency_key="order-2"),
        jq.new_job("k", {"n": 6}),
    ]
    calls = [asyncio.create_task(jq.submit([job])) for job in asked]
    await inserts.until_sent(6)  # the keyed five went out each alone, while the plain wait
    inserts.release_all()
    answers = [a for (a,) in await asyncio.gather(*calls)]
    await ahead
    assert sorted(inserts.sizes) == [1, 1, 1, 1, 1, 1, 2]  # the two plain ones together
    assert [a.outcome for a in answers[:4]] == [
        EnqueueOutcome.REPLAYED,
        EnqueueOutcome.KEY_REUSED,
        EnqueueOutcome.UNIQUE_KEY_HELD,
        EnqueueOutcome.CREATED,
    ]
    assert {answers[4].outcome, answers[5].outcome} == {
        EnqueueOutcome.CREATED,
        EnqueueOutcome.REPLAYED,
    }
    assert answers[6].outcome is EnqueueOutcome.CREATED
    assert [a.job.id for a in answers[:3]] == [first.id, first.id, holder.id]
    assert answers[3].job.payload == {"n": 4}
    assert answers[4].job.id == answers[5].job.id != answers[3].job.id
    assert len(await stored(jq)) == 6  # two before, the one ahead, three created


async def test_a_bad_job_among_concurrent_good_ones_fails_alone(
    jq: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    inserts = Inserts(jq, monkeypatch)
    calls = [jq.enqueue("k", {"n": n}) for n in range(20)]
    calls.insert(5, jq.enqueue("k", {"text": "a NUL \x00 here"}))
    calls.insert(15, jq.enqueue("k", {"not json": {1, 2}}))
    results = await asyncio.gather(*calls, return_exceptions=True)
    not_json, nul = results.pop(15), results.pop(5)
    assert isinstance(nul, InvalidJobError) and "NUL" in str(nul)
    assert isinstance(not_json, InvalidJobError) and "JSON" in str(not_json)
    assert all(isinstance(r, Job) for r in results), results
    assert [r.payload for r in results if isinstance(r, Job)] == [{"n": n} for n in range(20)]
    assert sum(inserts.sizes) == 20 and len(inserts.sizes) < 20, inserts.sizes
    assert len(await stored(jq)) == 20


@contextlib.contextmanager
def database_down(db_url: str) -> Iterator[Settings]:
    """Settings of a JobQueue whose database does not answer: PostgreSQL at a port nothing
    listens on, the SQLite file held by another connection's exclusive lock."""
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield Settings(database_url=db_url, sqlite_busy_timeout_ms=200)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    parts = urlsplit(db_url)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    yield Settings(database_url=urlunsplit(parts._replace(netloc=f"{host}:9")), pool_timeout_s=1.0)


async def test_an_outage_fails_every_caller_of_the_batch(db_url: str) -> None:
    with database_down(db_url) as settings:
        jq = JobQueue(settings=settings)
        try:
            results = await asyncio.gather(
                *(jq.enqueue("k", {"n": n}) for n in range(10)), return_exceptions=True
            )
        finally:
            await jq.close()
    assert all(isinstance(r, DatabaseUnavailableError) for r in results), results


async def test_a_cancelled_caller_loses_no_one_elses_job(
    jq: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller cancelled while its batch is in flight: its job is stored all the same (the
    documented rule). One cancelled before its job was sent: its job is never stored. A lone
    caller cancelled during its own insert takes only its own statement with it. Every other
    caller gets its own job, stored once."""
    inserts = Inserts(jq, monkeypatch)
    inserts.hold = True
    alone = asyncio.create_task(jq.enqueue("k", {"n": 0}))
    await inserts.until_sent(1)  # nothing was in flight: its caller's own insert, held
    batched = [asyncio.create_task(jq.enqueue("k", {"n": n})) for n in range(1, 6)]
    await asyncio.sleep(0)  # a turn of the loop: these five are in line behind it
    alone.cancel()
    await inserts.until_sent(2)  # the five went out together all the same, and are held
    waiting = [asyncio.create_task(jq.enqueue("k", {"n": n})) for n in range(6, 11)]
    await asyncio.sleep(0)  # in line behind the five, not yet sent
    batched[1].cancel()
    waiting[2].cancel()
    inserts.release_all()
    results = await asyncio.gather(alone, *batched, *waiting, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [
        n in (0, 2, 8) for n in range(11)
    ]
    assert inserts.sizes == [1, 5, 4]
    payloads = sorted(p["n"] for p in (await stored(jq)).values())
    assert payloads == [n for n in range(1, 11) if n != 8]  # 2 is in: its batch had been sent
    answered = [r for r in results if isinstance(r, Job)]
    assert [r.payload["n"] for r in answered] == [1, 3, 4, 5, 6, 7, 9, 10]


async def test_close_waits_for_the_enqueues_in_progress(db_url: str) -> None:
    jq = JobQueue(db_url)
    calls = [asyncio.create_task(jq.enqueue("k", {"n": n})) for n in range(50)]
    await asyncio.sleep(0)  # every call has handed its job in
    await jq.close()
    assert all(call.done() for call in calls)
    jobs = [call.result() for call in calls]
    async with JobQueue(db_url) as again:
        assert await stored(again) == {job.id: job.payload for job in jobs}
