"""The metrics the alerts and SLOs are built on: the backlog read from the database, the
per-kind counters and histograms, and exemplars carrying trace ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.observability.metrics import Metrics
from jobq.storage.base import WorkerRegistration
from jobq.worker.context import JobContext


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_backlog_counts_due_jobs_per_queue_up_to_a_cap(jq: JobQueue) -> None:
    past = datetime.now(UTC) - timedelta(seconds=60)
    for _ in range(3):
        await jq.enqueue("k", queue="a", run_at=past)
    await jq.enqueue("k", queue="b", delay=3600)  # waiting, but not due
    await jq.enqueue("k", queue="c")

    backlog = await jq.backlog()
    by_queue = {q.queue: q for q in backlog.queues}
    assert {q: (b.due) for q, b in by_queue.items()} == {"a": 3, "b": 0, "c": 1}
    assert 60 <= by_queue["a"].oldest_wait_s < 600
    assert by_queue["b"].oldest_wait_s == 0
    assert backlog.workers == 0 and backlog.newest_heartbeat_age_s is None

    capped = await jq.backlog(at_most=2)
    assert [(q.queue, q.due) for q in capped.queues] == [("a", 2), ("b", 0), ("c", 1)]

    await jq.driver.register_worker(WorkerRegistration("w1", "host", 1, None, 4))
    beating = await jq.backlog()
    assert beating.workers == 1
    assert beating.newest_heartbeat_age_s is not None
    assert 0 <= beating.newest_heartbeat_age_s < 600


async def test_metrics_endpoint_exports_backlog_slots_and_exemplars(db_url: str) -> None:
    jq = JobQueue(settings=Settings(database_url=db_url, retry_base_s=0.0, retry_cap_s=0.0))
    provider = TracerProvider()  # recording, exporting nowhere: the exemplars need trace ids
    jq.use_tracer_provider(provider)

    @jq.task(name="flaky", queue="work", max_attempts=2, retry_base=0.0, retry_cap=0.0)
    async def flaky(ctx: JobContext) -> None:
        raise RuntimeError("always")

    metrics = Metrics()
    app = create_app(jq, metrics=metrics)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as http,
    ):
        enqueued = set()
        for _ in range(2):
            created = await http.post("/jobs", json={"kind": "flaky", "queue": "work"})
            assert created.status_code == 201
            enqueued.add(created.json()["trace_id"])
        before = samples((await http.get("/metrics")).text)
        assert before[("jobq_queue_depth", (("queue", "work"),))] == 2
        assert before[("jobq_queue_oldest_wait_seconds", (("queue", "work"),))] >= 0
        assert before[("jobq_workers_registered", ())] == 0
        assert before[("jobq_worker_heartbeat_age_seconds", ())] == float("inf")

        await jq.worker(burst=True, metrics=metrics, concurrency=3).run()
        plain = await http.get("/metrics")
        assert plain.headers["content-type"].startswith("text/plain")
        after = samples(plain.text)
        kind = (("kind", "flaky"),)
        assert after[("jobq_job_attempts_total", kind)] == 4
        assert after[("jobq_job_retries_total", kind)] == 2
        assert after[("jobq_job_dead_letters_total", kind)] == 2
        assert after[("jobq_job_queue_time_seconds_count", kind)] == 4
        assert after[("jobq_worker_job_duration_seconds_count", kind)] == 4
        assert ("jobq_queue_depth", (("queue", "work"),)) not in after  # emptied: dropped
        assert after[("jobq_worker_slots", ())] == 0  # the worker stopped
        assert after[("jobq_worker_slots_busy", ())] == 0

        open_metrics = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    await jq.close()
    provider.shutdown()
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    trace_ids = {
        s.exemplar.labels["trace_id"]
        for family in openmetrics_families(open_metrics.text)
        if family.name in ("jobq_job_queue_time_seconds", "jobq_worker_job_duration_seconds")
        for s in family.samples
        if s.exemplar is not None
    }
    # The exemplars name the traces of the jobs observed (each attempt continues its job's).
    assert trace_ids and trace_ids <= enqueued
