"""Weighted queues on a real worker: with every queue full, claims follow the weights."""

from __future__ import annotations

import asyncio

from jobq import JobContext, JobQueue, JobStatus

from ..conformance.test_worker import fast_settings
from ..waiting import eventually

WEIGHTS = {"critical": 6, "default": 3, "low": 1}
MEASURED = 10_000


async def test_full_queues_are_claimed_in_proportion_to_their_weights(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url))

    @jq.task
    async def noop(ctx: JobContext) -> None:
        return None

    try:
        # Each queue alone holds more than the measured run: all three stay full throughout.
        for queue in WEIGHTS:
            for _ in range(MEASURED // 1000):
                await jq.enqueue_many([noop.configure(queue=queue).job() for _ in range(1000)])
        worker = jq.worker(queues=WEIGHTS, concurrency=64)
        running = asyncio.create_task(worker.run())

        async def measured() -> bool:
            return worker.processed >= MEASURED

        await eventually(measured, timeout=120, what=f"{MEASURED} jobs processed")
        worker.stop()
        await asyncio.wait_for(running, 30)

        done = dict.fromkeys(WEIGHTS, 0)
        for stat in await jq.stats():
            if stat.status is JobStatus.SUCCEEDED and stat.queue in done:
                done[stat.queue] = stat.count
        total = sum(done.values())
        assert total >= MEASURED
        for queue, weight in WEIGHTS.items():
            expected = weight / sum(WEIGHTS.values())
            share = done[queue] / total
            assert abs(share - expected) <= 0.05 * expected, (queue, share, done)
    finally:
        await jq.close()
