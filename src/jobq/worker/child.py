"""The process executor's child: runs one job at a time for the worker, over a pipe.

Messages (tuples, pickled by multiprocessing.connection):

- worker -> child: ``("run", job, "module:qualname", memory_limit_mb)``, ``("cancel",
  reason)``, ``("stop",)``;
- child -> worker: ``("ready", pid)``, ``("progress", percent, message)``, ``("log", level,
  event, fields)``, ``("ok", result)``, ``("error", kind, summary, traceback, retryable,
  retry_at)``.

A thread reads the pipe, so that a cancel request reaches a task that is busy computing
(``ctx.is_cancelled()``); the main thread runs the jobs. When the worker goes away (its end
of the pipe closes), the child exits at once: it never outlives its worker.

Kept free of the worker's imports (database drivers, the HTTP API): this module is what the
fork server preloads, so that a fresh child starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import queue
import resource
import signal
import threading
import traceback
from collections.abc import Generator
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from ..errors import DoNotRetry, JobCancelled, RetryAt
from ..model import Job
from .context import JobContext

MB = 1024 * 1024


class ProcessContextError(RuntimeError):
    """A JobContext feature a process-executor task cannot use."""


class MemoryLimitExceeded(MemoryError):
    """The task grew its child process past ``memory_limit_mb``."""


class _Sent:
    """What ``ctx.progress`` returns in a child: the report is already sent, and awaiting
    this does nothing, so both ``ctx.progress(50)`` (a sync task) and ``await
    ctx.progress(50)`` (a coroutine task) work."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class _ForwardingLog:
    """``ctx.log`` in a child: events go to the worker, which logs them bound to the job's
    ids (job id, kind, attempt, request id, worker id) with the child's pid."""

    def __init__(self, link: _Link, fields: dict[str, Any] | None = None) -> None:
        self._link = link
        self._fields = fields or {}

    def bind(self, **fields: Any) -> _ForwardingLog:
        return _ForwardingLog(self._link, {**self._fields, **fields})

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        self._link.send(("log", level, str(event), _plain({**self._fields, **fields})))

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("error", event, exc_info=traceback.format_exc(), **fields)


class ChildContext(JobContext):
    """The JobContext of a task in a child process. Progress, cancellation and logging
    cross the pipe; ``transaction()`` is not available (the child has no database
    connection of the worker's, and the job's completion is written by the worker)."""

    __slots__ = ("_link",)

    def __init__(self, job: Job, worker_id: str, link: _Link) -> None:
        super().__init__(job, worker_id, None)
        self._link = link
        self._log = _ForwardingLog(link)

    def progress(self, percent: float, message: str | None = None) -> Any:
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        self._link.send(("progress", float(percent), message))
        return _Sent()

    def transaction(self) -> Any:
        raise ProcessContextError(
            "ctx.transaction() is not available to a task with executor='process': its "
            "child process holds no connection of the worker's. Use an async task for "
            "exactly-once effects, or write from the child with a connection of its own."
        )

    async def wait_cancelled(self, timeout: float | None = None) -> bool:
        # The pipe's reader thread sets the flag; no event loop of the worker's to wake.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._cancelled:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True


class _Link:
    """The child's end of the pipe: sends from any thread, one message at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.conn.send(message)


class _ForwardLogging(logging.Handler):
    """Standard-library log records of the task, forwarded to the worker."""

    def __init__(self, link: _Link) -> None:
        super().__init__(logging.INFO)
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._link.send(
                ("log", record.levelname.lower(), record.getMessage(), {"logger": record.name})
            )


def child_main(conn: Connection, worker_id: str) -> None:
    """The child's whole life: report ready, run jobs until told to stop."""
    # Ctrl-C in a terminal signals the whole process group: the worker decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = _Link(conn)
    logging.getLogger().addHandler(_ForwardLogging(link))
    logging.getLogger().setLevel(logging.INFO)
    work: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    current: list[ChildContext] = []

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: so is its child, mid-job or not
            if message[0] == "cancel":
                if current:
                    current[0].request_cancel(message[1])
            elif message[0] == "stop":
                work.put(None)
            else:
                work.put(message)

    threading.Thread(target=read, name="jobq-child-pipe", daemon=True).start()
    link.send(("ready", os.getpid()))
    targets: dict[str, tuple[Any, Any]] = {}
    while (message := work.get()) is not None:
        _, job, target, memory_limit_mb, retry_for = message
        ctx = ChildContext(job, worker_id, link)
        current[:] = [ctx]
        reply, broken = _run(ctx, targets, target, memory_limit_mb, retry_for)
        current.clear()
        try:
            link.send(reply)
        except Exception as exc:  # a result pickle cannot carry: the job's own failure
            link.send(_error("do_not_retry", f"the task's return value cannot be sent: {exc}"))
        if broken:
            break  # after a MemoryError nothing in this process can be trusted


def _run(
    ctx: ChildContext,
    targets: dict[str, tuple[Any, Any]],
    target: str,
    memory_limit_mb: int | None,
    retry_for: tuple[type[BaseException], ...] | None,
) -> tuple[tuple[Any, ...], bool]:
    payload = ctx.job.payload
    try:
        if target not in targets:
            targets[target] = _resolve(target)
        func, task = targets[target]
    except Exception as exc:
        return _error("do_not_retry", f"cannot import {target} in the child process: {exc}"), False
    try:
        limited = _limit_memory(memory_limit_mb)
    except OSError as exc:  # no /proc: the limit cannot be set relative to the child's size
        return _error("do_not_retry", f"memory_limit_mb is not available here: {exc}"), False
    try:
        if asyncio.iscoroutinefunction(func):
            result = asyncio.run(func(ctx, **payload))
        else:
            result = func(ctx, **payload)
    except MemoryError as exc:
        _unlimit_memory(limited)
        if limited is not None:
            return _error("memory", f"exceeded {memory_limit_mb} MB (memory_limit_mb)", exc), True
        return _error("raised", _summary(exc), exc, retryable=True), True
    except JobCancelled as exc:
        return _error("cancelled", str(exc) or ctx.cancel_reason or "cancelled"), False
    except DoNotRetry as exc:
        return _error("do_not_retry", _summary(exc), exc), False
    except RetryAt as exc:
        return _error("retry_at", _summary(exc), exc, retry_at=exc.when), False
    except BaseException as exc:  # the task's failure, whatever it raised
        retryable = _retryable(task, retry_for, exc)
        return _error("raised", _summary(exc), exc, retryable=retryable), False
    finally:
        _unlimit_memory(limited)
    return ("ok", result), False


def _resolve(target: str) -> tuple[Any, Any]:
    """``module:qualname`` -> (the function, its Task if the name is bound to one)."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    func = getattr(obj, "func", None)
    return (func, obj) if callable(func) else (obj, None)


def _retryable(
    task: Any, retry_for: tuple[type[BaseException], ...] | None, exc: BaseException
) -> bool:
    """Whether the exception is one of the task's retry_for types, which only this process
    can tell (the exception's class lives here); the worker applies the rest of the policy."""
    if retry_for is None:
        retry = getattr(task, "retry", None)
        retry_for = retry.retry_for if retry is not None else (Exception,)
    return isinstance(exc, retry_for)


def _limit_memory(limit_mb: int | None) -> tuple[int, int] | None:
    """Cap the address space at what it is now plus ``limit_mb``: an allocation past it
    raises MemoryError in the task. Returns the limits to restore."""
    if not limit_mb:
        return None
    previous = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + limit_mb * MB, previous[1]))
    return previous


def _unlimit_memory(previous: tuple[int, int] | None) -> None:
    if previous is not None:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def _summary(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(
    kind: str,
    summary: str,
    exc: BaseException | None = None,
    *,
    retryable: bool = False,
    retry_at: datetime | None = None,
) -> tuple[Any, ...]:
    trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
    return ("error", kind, summary, trace, retryable, retry_at)


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """Log fields as the pipe can carry them: anything unusual as its repr."""
    return {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        for k, v in fields.items()
    }
