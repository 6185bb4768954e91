"""Logging: structlog on top of the standard library, JSON lines by default."""

from __future__ import annotations

import logging
import sys

import structlog

from ..config import Settings
from .tracing import tracing_installed


def add_trace_ids() -> structlog.types.Processor:
    """A processor adding ``trace_id`` and ``span_id`` (hex, as trace backends show them)
    to a line logged while an OpenTelemetry span is current: a request's, an enqueue's, a
    job attempt's."""
    from opentelemetry import trace

    def processor(
        _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
            event["span_id"] = format(context.span_id, "016x")
        return event

    return processor


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to stderr as JSON (or console text)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if tracing_installed():
        shared.append(add_trace_ids())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Drop below-level calls before any processor runs: they cost nothing then.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # The access log of uvicorn duplicates our own request log line.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
