"""The enqueuer's trace context is stored with the job on every insert path of each driver
(one job, a batch, a batch large enough for COPY, keyed jobs, ids only) and comes back with
the job a worker claims."""

from __future__ import annotations

from jobq.storage.base import ClaimParams, Driver, NewJob

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_trace_context_is_stored_on_every_insert_path(driver: Driver) -> None:
    one = NewJob(kind="k", trace_context=TRACEPARENT)
    batch = [NewJob(kind="k", trace_context=TRACEPARENT) for _ in range(3)]
    large = [NewJob(kind="k", trace_context=TRACEPARENT) for _ in range(150)]
    keyed = NewJob(kind="k", idempotency_key="key-1", trace_context=TRACEPARENT)
    plain = NewJob(kind="k")

    created = [
        *await driver.enqueue_many([one]),
        *await driver.enqueue_many(batch),
        *await driver.enqueue_many(large),
        *await driver.enqueue_many([keyed]),
    ]
    assert [j.trace_context for j in created] == [TRACEPARENT] * len(created)
    ids = await driver.enqueue_many_ids(large)
    (untraced,) = await driver.enqueue_many([plain])
    assert untraced.trace_context is None

    for job_id in [*(j.id for j in created), *ids]:
        stored = await driver.get(job_id)
        assert stored is not None and stored.trace_context == TRACEPARENT
    claimed = await driver.claim_batch(ClaimParams("w", 1000))
    assert len(claimed) == len(created) + len(ids) + 1
    by_id = {j.id: j.trace_context for j in claimed}
    assert by_id.pop(untraced.id) is None
    assert set(by_id.values()) == {TRACEPARENT}
