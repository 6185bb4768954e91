"""OpenTelemetry tracing, optional (``pip install jobq[otel]``).

A job is followed from the span that enqueued it to each attempt that ran it: the enqueue
span's W3C ``traceparent`` is stored with the job (``trace_context``), and every attempt's
span is a child of it, with a link to it too (the messaging conventions' "creation context"),
wherever and however much later the attempt runs. A periodic job's tick starts a trace of
its own. Outcomes are written in batches, so the completion span of a batch links to the
attempts it settles.

Tracing is on when an OpenTelemetry TracerProvider is in place: one the application
installed globally, one given to ``JobQueue.use_tracer_provider``, or the one
``setup_from_environment`` builds for the CLI from the standard ``OTEL_*`` variables. With
none, or without the extra, ``JobQueue.tracer`` is None and the queue pays one None check
per batch or job: nothing here is imported on that path.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..model import Job
from ..storage.base import NewJob

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, TracerProvider

SYSTEM = "jobq"
SERVICE_NAME = "jobq"
# Requests that are polled (a scraper, a load balancer) would drown the traces that matter.
UNTRACED_URLS = "/metrics,/health,/ready"


def tracing_installed() -> bool:
    """The OpenTelemetry API and SDK are importable (the ``otel`` extra), and not switched
    off with the standard ``OTEL_SDK_DISABLED=true``. Looks for the packages, imports
    nothing."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    try:
        return find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:  # not even the opentelemetry namespace
        return False


def exporter_configured() -> bool:
    """Whether the environment asks for traces to go somewhere: ``OTEL_TRACES_EXPORTER``
    other than ``none``, or an OTLP endpoint. Nothing configured means no tracing at all,
    rather than spans made and dropped for every job."""
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def setup_from_environment() -> TracerProvider | None:
    """For the CLI's long-running commands: install a global TracerProvider built from the
    standard variables (``OTEL_TRACES_EXPORTER`` = otlp and/or console, the
    ``OTEL_EXPORTER_OTLP_*`` endpoint and headers, ``OTEL_SERVICE_NAME`` (default jobq),
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``), or None when the extra is missing
    or nothing is configured. Spans are exported in batches off the event loop, and flushed
    when the process exits."""
    if not (tracing_installed() and exporter_configured()):
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    for name in (n.strip() for n in names.split(",")):
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER: jobq knows otlp, console and none, not {name!r}"
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def resolve(provider: TracerProvider | None = None) -> JobTracer | None:
    """A JobTracer over ``provider``, else over the global provider if the application
    installed one; None when tracing is off."""
    if provider is None:
        if not tracing_installed():
            return None
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None  # the API's placeholders: nobody configured tracing
    return JobTracer(provider)


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jobq")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return None


def trace_id_of(trace_context: str | None) -> str | None:
    """The trace id (32 hex digits) of a stored ``traceparent``, or None."""
    if not trace_context:
        return None
    parts = trace_context.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]


def _destination(jobs: Sequence[NewJob]) -> dict[str, Any]:
    queues = {j.queue for j in jobs}
    kinds = {j.kind for j in jobs}
    attributes: dict[str, Any] = {}
    if len(queues) == 1:
        attributes["messaging.destination.name"] = next(iter(queues))
    if len(kinds) == 1:
        attributes["jobq.job.kind"] = next(iter(kinds))
    if len(jobs) > 1:
        attributes["messaging.batch.message_count"] = len(jobs)
    return attributes


class Sending:
    """An enqueue in progress: the jobs stamped with its trace context."""

    __slots__ = ("jobs", "span")

    def __init__(self, span: Span, jobs: list[NewJob]) -> None:
        self.span = span
        self.jobs = jobs

    def record(self, job_ids: Sequence[int]) -> None:
        """The ids the jobs got (a single job's is its message id)."""
        if len(job_ids) == 1:
            self.span.set_attribute("messaging.message.id", str(job_ids[0]))
            self.span.set_attribute("jobq.job.id", job_ids[0])


class JobTracer:
    """Makes jobq's spans, with the messaging conventions' attributes (system jobq,
    destination = the queue, message id = the job id)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("jobq", _version())
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._context = context

    # ------------------------------------------------------------------ producing
    @contextlib.contextmanager
    def enqueuing(self, jobs: Sequence[NewJob]) -> Iterator[Sending]:
        """A producer span around an enqueue; the jobs it yields carry its traceparent."""
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation": "publish",
            "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
            **_destination(jobs),
        }
        queue = attributes.get("messaging.destination.name", "jobq")
        with self._tracer.start_as_current_span(
            f"send {queue}", kind=self._trace.SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            traceparent = carrier.get("traceparent")
            stamped = [replace(j, trace_context=traceparent) for j in jobs]
            yield Sending(span, stamped)

    @contextlib.contextmanager
    def new_trace(self) -> Iterator[None]:
        """Whatever span is current, what runs inside starts a trace of its own (a periodic
        job's tick belongs to no request)."""
        token = self._context.attach(self._context.Context())
        try:
            yield
        finally:
            self._context.detach(token)

    # ------------------------------------------------------------------ running
    def start_attempt(self, job: Job, worker_id: str) -> Span:
        """The span of one attempt: a child of the enqueue span (and linked to it), or a
        trace of its own for a job enqueued without tracing."""
        links = []
        parent = self._context.Context()
        if job.trace_context:
            parent = self._propagator.extract({"traceparent": job.trace_context}, parent)
            created = self._trace.get_current_span(parent).get_span_context()
            if created.is_valid:
                links.append(self._trace.Link(created))
        return self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation": "process",
                "messaging.operation.type": "process",
                "messaging.operation.name": "run",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "jobq.job.id": job.id,
                "jobq.job.kind": job.kind,
                "jobq.job.attempt": job.attempt,
                "jobq.worker.id": worker_id,
            },
        )

    def context_with(self, span: Span) -> contextvars.Context:
        """A copy of the current context in which ``span`` is the current span: the job's
        asyncio task runs in it, so the task's own spans and log lines belong to the attempt."""
        ctx = contextvars.copy_context()
        ctx.run(self._context.attach, self._trace.set_span_in_context(span))
        return ctx

    def attempt_failed(self, span: Span, exc: BaseException, error: str) -> None:
        span.record_exception(exc)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))

    def end_attempt(self, span: Span, outcome: str) -> None:
        span.set_attribute("jobq.job.outcome", outcome)
        span.end()

    @staticmethod
    def trace_id(span: Span) -> str:
        return format(span.get_span_context().trace_id, "032x")

    # ------------------------------------------------------------------ completing
    @contextlib.contextmanager
    def settling(self, attempts: Sequence[SpanContext], count: int) -> Iterator[None]:
        """The write of a batch of outcomes, linked to the attempts it settles."""
        with (
            self.new_trace(),
            self._tracer.start_as_current_span(
                "settle jobq",
                kind=self._trace.SpanKind.CLIENT,
                links=[self._trace.Link(a) for a in attempts],
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.operation.type": "settle",
                    "messaging.operation.name": "complete",
                    "messaging.batch.message_count": count,
                },
            ),
        ):
            yield
