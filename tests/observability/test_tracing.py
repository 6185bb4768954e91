"""Traces from request to job, read from the OpenTelemetry SDK's in-memory exporter: the HTTP
request, the enqueue, each attempt and the completion, on each driver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.observability.logging import add_trace_ids
from jobq.observability.tracing import trace_id_of
from jobq.worker.context import JobContext

from ..waiting import eventually


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # Not installed globally: each test traces with its own provider (use_tracer_provider).
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


@pytest.fixture
async def traced(db_url: str, provider: TracerProvider) -> AsyncIterator[JobQueue]:
    jq = JobQueue(settings=Settings(database_url=db_url, retry_base_s=0.0, retry_cap_s=0.0))
    jq.use_tracer_provider(provider)
    try:
        yield jq
    finally:
        await jq.close()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def has(span: ReadableSpan, attributes: dict[str, Any]) -> bool:
    present = dict(span.attributes or {})
    missing = {k: v for k, v in attributes.items() if present.get(k) != v}
    assert not missing, f"{span.name}: {missing} not in {present}"
    return True


def linked_to(span: ReadableSpan, other: ReadableSpan) -> bool:
    assert other.context is not None
    return any(link.context.span_id == other.context.span_id for link in span.links)


async def test_http_enqueue_and_attempt_make_one_trace(
    traced: JobQueue, exporter: InMemorySpanExporter
) -> None:
    seen: list[Any] = []

    @traced.task(name="report", queue="reports")
    async def report(ctx: JobContext, n: int) -> int:
        # What the task's own code sees: the attempt's span is current.
        seen.append(trace.get_current_span().get_span_context())
        return n

    app = create_app(traced)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as http,
    ):
        created = await http.post("/jobs", json={"kind": "report", "payload": {"n": 3}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        await traced.run_worker(burst=True)
        shown = (await http.get(f"/jobs/{job_id}")).json()

    spans = exporter.get_finished_spans()
    request = one(spans, "POST /jobs")
    send = one(spans, "send reports")
    process = one(spans, "process reports")
    settle = one(spans, "settle jobq")
    assert request.kind is SpanKind.SERVER
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert request.context is not None and send.context is not None
    assert process.context is not None
    # One trace: request -> send -> process; the process span also links to its creation.
    trace_id = request.context.trace_id
    assert send.context.trace_id == trace_id == process.context.trace_id
    assert parent_id(send) == request.context.span_id
    assert parent_id(process) == send.context.span_id
    assert linked_to(process, send)
    assert linked_to(settle, process)
    assert seen == [process.context]
    assert shown["trace_id"] == format(trace_id, "032x")
    assert shown["status"] == "succeeded"

    assert has(
        send,
        {
            "messaging.system": "jobq",
            "messaging.operation.type": "send",
            "messaging.destination.name": "reports",
            "messaging.message.id": str(job_id),
            "jobq.job.kind": "report",
        },
    )
    assert has(
        process,
        {
            "messaging.system": "jobq",
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": "reports",
            "messaging.message.id": str(job_id),
            "jobq.job.id": job_id,
            "jobq.job.kind": "report",
            "jobq.job.attempt": 1,
            "jobq.job.outcome": "succeeded",
        },
    )
    assert has(
        settle,
        {
            "messaging.system": "jobq",
            "messaging.operation.type": "settle",
        },
    )


async def test_concurrent_defers_sharing_an_insert_each_get_their_own_span(
    traced: JobQueue, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="note", queue="notes")
    async def note(ctx: JobContext, n: int) -> None:
        return None

    jobs = await asyncio.gather(*(note.defer(n) for n in range(20)))
    sends = by_name(exporter.get_finished_spans(), "send notes")
    assert len(sends) == 20  # a span per call, though the calls shared inserts
    by_id = {s.attributes["messaging.message.id"]: s for s in sends if s.attributes}
    for job in jobs:
        stored = await traced.get(job.id)
        span = by_id[str(job.id)]  # each span names its own job...
        assert span.context is not None
        # ...and each job carries its own call's span as its parent context.
        assert stored.trace_context is not None
        _, trace_id, span_id, _ = stored.trace_context.split("-")
        assert (trace_id, span_id) == (
            f"{span.context.trace_id:032x}",
            f"{span.context.span_id:016x}",
        )
    assert len({s.context.trace_id for s in sends if s.context}) == 20  # none in another's trace


async def test_every_attempt_of_a_retried_job_continues_its_enqueue(
    traced: JobQueue, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="flaky", max_attempts=3, retry_base=0.0, retry_cap=0.0)
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")

    job = await flaky.defer()
    await traced.run_worker(burst=True)
    assert (await traced.get(job.id)).status == "succeeded"

    spans = exporter.get_finished_spans()
    send = one(spans, "send default")
    assert send.context is not None
    assert parent_id(send) is None  # nothing was current: the enqueue starts the trace
    attempts = sorted(by_name(spans, "process default"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {})["jobq.job.attempt"] for s in attempts] == [1, 2, 3]
    for attempt in attempts:
        assert attempt.context is not None
        assert attempt.context.trace_id == send.context.trace_id
        assert parent_id(attempt) == send.context.span_id
        assert linked_to(attempt, send)
    outcomes = [(s.attributes or {})["jobq.job.outcome"] for s in attempts]
    assert outcomes == ["retried", "retried", "succeeded"]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attempts[0].events[0].name == "exception"
    assert (await traced.get(job.id)).trace_context is not None


async def test_a_periodic_job_starts_its_own_trace(
    traced: JobQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @traced.periodic("@hourly", name="tick")
    async def tick(ctx: JobContext) -> None:
        return None

    outer = provider.get_tracer("test").start_span("unrelated work")
    with trace.use_span(outer, end_on_exit=True):
        # Whatever is current where the scheduler runs, the tick belongs to no request.
        await traced.schedules[0].enqueue(traced, datetime(2024, 5, 1, 12, tzinfo=UTC))
    await traced.run_worker(burst=True)

    spans = exporter.get_finished_spans()
    send = one(spans, "send default")
    process = one(spans, "process default")
    assert send.context is not None and process.context is not None
    assert outer.get_span_context().trace_id != send.context.trace_id
    assert parent_id(send) is None
    assert process.context.trace_id == send.context.trace_id
    assert parent_id(process) == send.context.span_id


async def test_ticks_of_a_running_worker_start_traces_of_their_own(
    traced: JobQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    ran: list[int] = []

    @traced.periodic("* * * * * *", name="every_second")  # six fields: every second
    async def every_second(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    worker = traced.worker(concurrency=2)
    # The worker starts inside a span: its scheduler's ticks must still not join that trace.
    with provider.get_tracer("test").start_as_current_span("deploy") as deploy:
        running = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _ran_twice(ran), timeout=30, what="two ticks run")
    finally:
        worker.stop()
        await running

    spans = exporter.get_finished_spans()
    sends = by_name(spans, "send default")
    assert len(sends) >= 2
    deploy_trace = deploy.get_span_context().trace_id
    for send in sends:
        assert send.context is not None
        assert parent_id(send) is None and send.context.trace_id != deploy_trace
    assert len({s.context.trace_id for s in sends if s.context is not None}) == len(sends)
    for process in by_name(spans, "process default"):
        assert process.context is not None
        (creator,) = [s for s in sends if s.context is not None and linked_to(process, s)]
        assert creator.context is not None
        assert process.context.trace_id == creator.context.trace_id


async def _ran_twice(ran: list[int]) -> bool:
    return len(ran) >= 2


async def test_untraced_jobs_have_no_trace_context(db_url: str) -> None:
    async with JobQueue(db_url) as jq:
        jq.use_tracer_provider(None)
        job = await jq.enqueue("anything")
        assert (await jq.get(job.id)).trace_context is None
    assert trace_id_of(None) is None
    assert trace_id_of("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert trace_id_of("00-" + "a" * 32 + "-" + "1" * 16 + "-01") == "a" * 32


def test_log_lines_carry_the_current_span(provider: TracerProvider) -> None:
    add = add_trace_ids()
    outside = add(None, "info", {"event": "outside"})
    assert "trace_id" not in outside and "span_id" not in outside
    with provider.get_tracer("test").start_as_current_span("work") as span:
        inside = add(None, "info", {"event": "inside"})
        context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    # And as jobq configures logging: the processor is in the chain of every line (in a
    # process of its own, as logging's configuration is global).
    script = """
import logging
from opentelemetry.sdk.trace import TracerProvider
from jobq.config import Settings
from jobq.observability.logging import configure_logging
configure_logging(Settings(log_json=True))
with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
    logging.getLogger("jobq.test").warning("inside")
    print(format(span.get_span_context().trace_id, "032x"))
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    line = json.loads(ran.stderr.strip().splitlines()[-1])
    assert line["event"] == "inside"
    assert line["trace_id"] == ran.stdout.strip()
