"""The process executor: tasks in child processes that the worker can kill.

A small pool of its own on ``multiprocessing`` (fork server start, one duplex pipe per child)
rather than ``concurrent.futures.ProcessPoolExecutor``: that pool cannot kill the one child
running a hung job (killing a child breaks the whole pool), has no channel back for progress,
logs and cancellation while a job runs, and no per-job memory limit. Celery's billiard and
pebble cover parts of this, but each would still need the pipe protocol around it for the
JobContext; the pool itself is the small part. See docs/executors.md.

Per child: one job at a time. Per job: a hard timeout (SIGKILL, counted from when the child
starts the job), a memory limit (the child's address space capped at its size plus the
limit), crash isolation (a child that dies fails only its attempt), and recycling after
``max_jobs_per_child`` jobs. A killed or dead child is replaced at once.

Fork server, not fork: the worker has an event loop, a database pool and threads, none of
which survive a fork intact. The fork server is a clean process that preloads only the child
module, so a fresh child starts in milliseconds instead of a spawn's interpreter start.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerProcess
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import DoNotRetry, JobCancelled, RetryAt
from .child import child_main

if TYPE_CHECKING:
    from ..observability.metrics import Metrics
    from ..task import Task
    from .context import JobContext

log = structlog.get_logger("jobq.worker")

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["jobq.worker.child"])


class HardTimeout(TimeoutError):
    """The job outlived its timeout and its child process was killed."""


class ChildDied(Exception):
    """The child process running the job died (a crash, a signal, ``os._exit``)."""


class TaskFailedInChild(Exception):
    """A process task raised: its type, message and traceback, as text (the exception
    itself stays in the child, where its class lives)."""

    def __init__(self, summary: str, trace: str, retryable: bool) -> None:
        super().__init__(summary)
        self.summary = summary
        self.trace = trace
        self.retryable = retryable


class MemoryLimitError(Exception):
    """The task grew its child past ``memory_limit_mb``; the child was replaced."""


# Failures whose message is already what the job's error should say.
CHILD_FAILURES = (HardTimeout, ChildDied, TaskFailedInChild, MemoryLimitError)


class _Child:
    """One child process and the job it runs."""

    def __init__(self, process: ForkServerProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.jobs = 0
        self.reply: asyncio.Future[tuple[Any, ...]] | None = None
        self.ctx: JobContext | None = None
        self.writes: list[asyncio.Future[None]] = []
        self.gone = False  # reaped: its process object is closed

    @property
    def pid(self) -> int | None:
        return self.process.pid


class ProcessPool:
    def __init__(
        self,
        size: int,
        *,
        worker_id: str,
        max_jobs_per_child: int = 0,
        memory_limit_mb: int = 0,
        cancel_grace_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a process pool needs at least one child")
        self.size = size
        self.worker_id = worker_id
        self.max_jobs_per_child = max_jobs_per_child
        self.memory_limit_mb = memory_limit_mb
        self.cancel_grace_s = cancel_grace_s
        self._metrics = metrics
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._starting = 0
        self._freed = asyncio.Condition()
        self._closed = False
        self._spares: set[asyncio.Task[None]] = set()

    @property
    def children(self) -> int:
        return len(self._idle) + len(self._busy)

    # ------------------------------------------------------------------ running a job
    async def run(self, ctx: JobContext, task: Task[Any, Any], timeout: float | None) -> Any:
        """Run the job in a child; its result, or the failure as an exception the worker
        records (HardTimeout, MemoryLimitError, ChildDied, TaskFailedInChild, JobCancelled,
        DoNotRetry, RetryAt)."""
        child = await self._acquire()
        reply: tuple[Any, ...] = ("died", "")
        try:
            reply = await self._run_in(child, ctx, task, timeout)
        finally:
            await self._release(child, self._reusable(child, reply))
        return _outcome(reply, ctx)

    def _reusable(self, child: _Child, reply: tuple[Any, ...]) -> bool:
        """Whether the child may run another job: it answered (a task's exception is
        the task's business), did not run out of memory and has jobs left before recycling."""
        if reply[0] == "died" or (reply[0] == "error" and reply[1] == "memory"):
            return False
        return not self.max_jobs_per_child or child.jobs < self.max_jobs_per_child

    async def _run_in(
        self, child: _Child, ctx: JobContext, task: Task[Any, Any], timeout: float | None
    ) -> tuple[Any, ...]:
        """The child's reply; raises (after killing the child) on timeout or on a
        cancellation the task did not heed."""
        loop = asyncio.get_running_loop()
        child.reply = loop.create_future()
        child.ctx = ctx
        limit = task.memory_limit_mb or self.memory_limit_mb or None
        target = f"{task.func.__module__}:{task.func.__qualname__}"
        try:
            child.conn.send(("run", ctx.job, target, limit, _portable(task.retry.retry_for)))
        except OSError as exc:  # it died idle, and its end of the pipe is not read yet
            return ("died", f"child process died before the job reached it: {exc}")
        child.jobs += 1
        deadline = None if timeout is None else loop.time() + timeout
        cancel_sent_at: float | None = None
        while not child.reply.done():
            waits: list[asyncio.Future[Any]] = [child.reply]
            if cancel_sent_at is None:
                waits.append(asyncio.ensure_future(ctx.wait_cancelled()))
            ends = [
                d for d in (deadline, _after(cancel_sent_at, self.cancel_grace_s)) if d is not None
            ]
            left = None if not ends else max(0.0, min(ends) - loop.time())
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits[1:]:
                    waiter.cancel()
            if child.reply.done():
                break
            now = loop.time()
            if cancel_sent_at is None and ctx.is_cancelled():
                with contextlib.suppress(OSError):
                    child.conn.send(("cancel", ctx.cancel_reason or "cancelled on request"))
                cancel_sent_at = now
                continue
            if cancel_sent_at is not None and now >= cancel_sent_at + self.cancel_grace_s:
                await self._kill(child, "cancelled")
                raise JobCancelled(
                    f"{ctx.cancel_reason or 'cancelled'} (terminated after a grace of "
                    f"{self.cancel_grace_s:g} s)"
                )
            if deadline is not None and now >= deadline:
                await self._kill(child, "timeout")
                raise HardTimeout(f"timed out after {timeout:g} s (killed)")
        await self._flush_writes(child)
        return child.reply.result()

    # ------------------------------------------------------------------ children
    async def _acquire(self) -> _Child:
        async with self._freed:
            while True:
                if self._closed:
                    raise RuntimeError("the process pool is closed")
                if self._idle:
                    child = self._idle.pop()
                    self._busy.add(child)
                    return child
                if self.children + self._starting < self.size:
                    break
                await self._freed.wait()
            self._starting += 1
        try:
            child = await self._start_child()
        finally:
            self._starting -= 1
        self._busy.add(child)
        return child

    async def _release(self, child: _Child, keep: bool) -> None:
        self._busy.discard(child)
        child.reply = None
        child.ctx = None
        if keep and not child.gone and not child.conn.closed and not self._closed:
            self._idle.append(child)
        else:
            await self._retire(child)
            if not self._closed:
                self._start_spare()
        async with self._freed:
            self._freed.notify()

    def _start_spare(self) -> None:
        """A fresh child in place of one that went away, started now rather than when the
        next job needs it."""
        spare = asyncio.create_task(self._add_spare())
        self._spares.add(spare)
        spare.add_done_callback(self._spares.discard)

    async def _add_spare(self) -> None:
        if self.children + self._starting >= self.size:
            return
        self._starting += 1
        try:
            child = await self._start_child()
        except Exception as exc:  # the next job starts one itself
            log.warning("could not start a child process", error=str(exc))
            return
        finally:
            self._starting -= 1
        if self._closed:
            await self._retire(child)
            return
        self._idle.append(child)
        async with self._freed:
            self._freed.notify()

    async def _start_child(self) -> _Child:
        ours, theirs = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=child_main, args=(theirs, self.worker_id), name="jobq-child"
        )
        # The fork server's first start (an interpreter, the preload) takes a while: off
        # the event loop. Each child after that is a fork of it, started in a millisecond.
        await asyncio.to_thread(forkserver.ensure_running)
        with _main_module_hidden():
            process.start()
        theirs.close()
        child = _Child(process, ours)
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        child.reply = ready
        loop.add_reader(ours.fileno(), self._on_message, child)
        try:
            answer = await asyncio.wait_for(ready, 60)
            if answer[0] != "ready":  # it died before its first word
                raise ChildDied(f"a child process failed to start: {answer[1]}")
        except BaseException:
            await self._retire(child)
            raise
        child.reply = None
        return child

    def _on_message(self, child: _Child) -> None:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            self._on_death(child)
            return
        kind = message[0]
        if kind == "log":
            self._relay_log(child, message[1], message[2], message[3])
        elif kind == "progress":
            if child.ctx is not None:
                child.writes.append(asyncio.ensure_future(self._progress(child.ctx, message)))
        elif child.reply is not None and not child.reply.done():
            child.reply.set_result(message)

    def _on_death(self, child: _Child) -> None:
        asyncio.get_running_loop().remove_reader(child.conn.fileno())
        child.process.join(1)  # it closed its pipe end by dying: reaped at once
        code = child.process.exitcode
        if code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        child.conn.close()
        if self._metrics is not None:
            self._metrics.children_replaced.labels("died").inc()
        if child.reply is not None and not child.reply.done():
            log.warning("child process died while running a job", pid=child.pid, how=how)
            child.reply.set_result(("died", f"child process died: {how}"))
        elif child in self._idle:  # died between jobs (the kernel's OOM killer, say)
            log.warning("idle child process died; replacing it", pid=child.pid, how=how)
            self._idle.remove(child)
            child.gone = True
            child.process.close()
            if not self._closed:
                self._start_spare()

    async def _progress(self, ctx: JobContext, message: tuple[Any, ...]) -> None:
        try:
            await ctx.progress(message[1], message[2])
        except Exception as exc:  # progress is informative; the job goes on
            ctx.log.warning("could not record progress", error=str(exc))

    async def _flush_writes(self, child: _Child) -> None:
        writes, child.writes = child.writes, []
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)

    def _relay_log(self, child: _Child, level: str, event: str, fields: dict[str, Any]) -> None:
        logger = child.ctx.log if child.ctx is not None else log
        emit = getattr(logger, level, None) or logger.info
        fields.pop("event", None)
        fields["child_pid"] = child.pid
        try:
            emit(event, **fields)
        except Exception as exc:  # a field the logger refuses: the event, without fields
            logger.warning(event, child_pid=child.pid, log_error=str(exc))

    async def _kill(self, child: _Child, reason: str) -> None:
        """SIGKILL: a hung or cancelled-but-deaf task gets no say. Its slot is freed by
        ``_release``, which starts the replacement."""
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        await self._retire(child)
        if self._metrics is not None:
            self._metrics.children_replaced.labels(reason).inc()

    async def _retire(self, child: _Child) -> None:
        """Stop a child and reap it: ask, then kill if it does not go within a second."""
        if child.gone:
            return
        child.gone = True
        if not child.conn.closed:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(child.conn.fileno())
            with contextlib.suppress(OSError, ValueError):
                child.conn.send(("stop",))
        await asyncio.to_thread(child.process.join, 1)
        if child.process.is_alive():
            child.process.kill()
            await asyncio.to_thread(child.process.join)
        if not child.conn.closed:
            child.conn.close()
        child.process.close()

    async def close(self) -> None:
        """Stop every child. The worker calls this after its jobs ended or were handed
        back, so an idle child only finishes what it is doing: nothing."""
        self._closed = True
        for spare in list(self._spares):
            spare.cancel()
        children = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(self._retire(c) for c in children), return_exceptions=True)
        async with self._freed:
            self._freed.notify_all()


def _portable(classes: tuple[type[BaseException], ...]) -> tuple[type[BaseException], ...] | None:
    """The task's retry_for, if the child can receive it (classes travel by import path: a
    class defined inside a function cannot); None lets the child decide from the task."""
    try:
        pickle.dumps(classes)
    except Exception:
        return None
    return classes


def _outcome(reply: tuple[Any, ...], ctx: JobContext) -> Any:
    """The job's result, or its failure raised as the worker records it."""
    if reply[0] == "ok":
        return reply[1]
    if reply[0] == "died":
        raise ChildDied(reply[1])
    _, kind, summary, trace, retryable, retry_at = reply
    if kind == "memory":
        ctx.log.warning("child process exceeded its memory limit; replaced", error=summary)
        raise MemoryLimitError(summary)
    if kind == "cancelled":
        raise JobCancelled(summary)
    if kind == "do_not_retry":
        raise DoNotRetry(summary)
    if kind == "retry_at":
        raise RetryAt(retry_at, summary)
    raise TaskFailedInChild(summary, trace, retryable)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a child without multiprocessing's re-import of the program's main module in
    it (a CLI with its web framework, a script that is not guarded by ``if __name__ ==
    "__main__"``): a child only runs jobq's child loop and imports the task's own module,
    which the task registration made sure is not ``__main__``."""
    main = sys.modules["__main__"]
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__
    }
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _after(start: float | None, delay: float) -> float | None:
    return None if start is None else start + delay
