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


async def test_weighted_claims_keep_queue_limits_and_tenant_fairness(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url, tenant_fairness=True))
    jq.limit_queue("a", max_running=2)
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    @jq.task
    async def step(ctx: JobContext) -> None:
        queue = ctx.job.queue
        running[queue] += 1
        peak[queue] = max(peak[queue], running[queue])
        await asyncio.sleep(0)  # let the worker start others meanwhile
        running[queue] -= 1

    try:
        for queue in ("a", "b"):
            await jq.enqueue_many(
                [step.configure(queue=queue, tenant=f"t{i % 3}").job() for i in range(150)]
            )
        await asyncio.wait_for(
            jq.run_worker(queues={"a": 3, "b": 1}, concurrency=8, burst=True), 120
        )
        stats = {(s.queue, s.status): s.count for s in await jq.stats()}
        assert stats == {("a", JobStatus.SUCCEEDED): 150, ("b", JobStatus.SUCCEEDED): 150}
        assert peak["a"] <= 2  # the queue's limit holds through the weighted split
        assert peak["b"] > 2  # and the slots it could not take went to b
    finally:
        await jq.close()
