"""Logging: structlog on top of the standard library; JSON lines, or console text on a
terminal (``JOBQ_LOG_JSON``)."""

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


def logs_json(settings: Settings) -> bool:
    """``JOBQ_LOG_JSON``, or when unset: JSON unless stderr is a terminal (a person reads a
    terminal; a collector reads a file, a pipe or a journal)."""
    if settings.log_json is not None:
        return settings.log_json
    return not sys.stderr.isatty()


def configure_logging_unless_configured(settings: Settings) -> None:
    """``configure_logging`` for a program that has not set logging up itself (a script
    that runs a worker), so that it logs as ``jobq worker`` does; an application's own
    logging configuration (root handlers, structlog's, or uvicorn's when the worker runs
    inside a served ASGI app) is left alone."""
    configured = logging.getLogger().handlers or structlog.is_configured()
    served = logging.getLogger("uvicorn").handlers  # an ASGI app's process: uvicorn's logging
    if not configured and not served:
        configure_logging(settings)


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to stderr as JSON or console text (logs_json)."""
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
        if logs_json(settings)
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
