"""The worker: claims due jobs into free slots, runs them, writes their outcomes in batches.

Moving parts, each on its own task so they overlap (and, on PostgreSQL, on their own pooled
connections):
- the claim loop never asks for more jobs than there are free slots, so a claimed job
  never waits for a slot while its lease runs, and for at most half of all slots at a time,
  so one claim is at the database while the last one's jobs run; it sleeps on a wake-up
  (LISTEN/NOTIFY or the in-process bus) with a polling fallback;
- one asyncio task per running job, bounded by ``concurrency``;
- the completer (``completer.py``) batches outcomes into one statement per flush;
- the heartbeat loop keeps this worker's registration alive, polls for cancel requests, and
  rescues jobs of workers that stopped heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import (
    DatabaseUnavailableError,
    DoNotRetry,
    InvalidJobError,
    JobCancelled,
    LeaseLostError,
    RetryAt,
    UnknownTaskError,
)
from ..maintenance import Maintenance, holder_id
from ..model import Job
from ..observability.logging import configure_logging_unless_configured
from ..observability.metrics import Metrics, bound_labels
from ..periodic import start_scheduler
from ..storage.base import ClaimParams, Completion, Failure, Listener, WorkerRegistration
from ..storage.common import storable_json
from ..task import check_importable
from .completer import Completer
from .context import JobContext
from .pausing import ClaimableQueues
from .processes import CHILD_FAILURES, ProcessPool, TaskFailedInChild
from .threads import TaskThreads
from .weights import WeightedPlanner

if TYPE_CHECKING:
    from ..observability.tracing import JobTracer
    from ..registry import TaskRegistry
    from ..task import Executor, Task
    from .services import WorkerServices

log = structlog.get_logger("jobq.worker")


class Worker:
    def __init__(
        self,
        services: WorkerServices,
        *,
        queues: Sequence[str] | Mapping[str, int] | None,
        concurrency: int,
        burst: bool = False,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.services = services
        self.settings = services.settings
        # A script's worker logs as `jobq worker` does, unless the script set logging up.
        configure_logging_unless_configured(self.settings)
        self.driver = services.driver
        self.registry = services.registry
        self.queues = list(queues) if queues is not None else None
        # {queue: weight}: claims split across the queues in proportion (see weights.py);
        # a plain list claims by strict priority across the queues.
        self._planner = WeightedPlanner(queues) if isinstance(queues, Mapping) else None
        self._planner_reset_at = 0.0
        # Read once: tasks are registered before workers start. None keeps the plain claim.
        self._limits = self.registry.claim_limits() or None
        self._claimable = ClaimableQueues(self.driver, self.queues, self.settings.poll_interval_s)
        self.concurrency = concurrency
        self._claim_size = (concurrency + 1) // 2
        self.burst = burst
        self.id = worker_id or holder_id("")
        self.rng = rng or random.Random()
        self.log = log.bind(worker_id=self.id)
        self.metrics = metrics or Metrics()
        bound_labels(self.metrics, self.registry, queues or ())
        self._meters = WorkerMeters(self.metrics, lambda: len(self._running))
        # Per-job lines (request id -> job) only when asked for: decided once, since even a
        # filtered log call per job costs measurable throughput.
        self._trace_jobs = self.settings.log_jobs or logging.getLogger("jobq.worker").isEnabledFor(
            logging.DEBUG
        )
        self._trace_level = logging.INFO if self.settings.log_jobs else logging.DEBUG

        self._running: dict[int, tuple[JobContext, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._finished = asyncio.Event()  # clear while run() runs
        self._finished.set()
        self._tracer = services.tracer  # None: tracing off, and no span or context per job
        self._meters.per_kind_queue_time = self._tracer is None
        self._completer = Completer(
            self.driver,
            flush_s=self.settings.completion_flush_s,
            batch_size=self.settings.completion_batch_size,
            tracer=self._tracer,
        )
        self._listener: Listener | None = None
        self._sync_executor: Executor = (
            "process" if self.settings.executor == "process" else "thread"
        )
        if self._sync_executor == "process":  # refused now, not job by job in the children
            for task in self.registry.tasks.values():
                if task.executor_for("process") == "process":
                    check_importable(task.name, task.func)
        # One thread per slot; a thread stuck past its job's timeout keeps its slot (see
        # threads.py), so claims shrink rather than fresh jobs waiting for a thread.
        self._threads = TaskThreads(concurrency, on_stuck=self._on_stuck_threads)
        self._processes: ProcessPool | None = None  # started with the first process job
        self._stuck_seen = 0
        self.processed = 0  # jobs finished (any outcome) by this worker
        self.maintenance = Maintenance(
            self.driver, self.settings, self.id, log=self.log, on_rescued=self._wake.set
        )

    # ------------------------------------------------------------------ control
    def stop(self, *, graceful: bool = True) -> Stopping:
        """Stop claiming; in-flight jobs get ``shutdown_grace_s`` to finish (none if not
        graceful), then they are cancelled and handed back to the queue. Returns at once;
        ``await worker.stop()`` also waits until ``run()`` has returned."""
        if self._stopping.is_set() or not graceful:
            self._stop_now.set()
        self._stopping.set()
        self._wake.set()
        return Stopping(self._finished)

    def install_signal_handlers(
        self, loop: asyncio.AbstractEventLoop, received_before: Sequence[signal.Signals] = ()
    ) -> None:
        """SIGTERM/SIGINT: stop gracefully; a second signal stops at once. ``received_before``
        are signals that arrived while the process was still starting: they count as if they
        came now, so a worker told to stop during start-up claims nothing and exits cleanly."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for sig in received_before:
            self._on_signal(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("signal received; stopping", signal=sig.name, running=len(self._running))
        self.stop()

    @property
    def running_job_ids(self) -> list[int]:
        return list(self._running)

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        """Work until stopped (or, with ``burst``, until no due work is left)."""
        self._finished.clear()
        try:
            await self._run()
        finally:
            self._finished.set()

    async def _run(self) -> None:
        await self.driver.open()
        registration = WorkerRegistration(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
        )
        if not await self.until_database_answers(
            lambda: self.driver.register_worker(registration), "registration"
        ):
            return  # stopped before the database came back: nothing claimed, nothing to undo
        self.log.info("worker started", queues=self.queues or "all", concurrency=self.concurrency)
        # Jobs left running by workers that died while nothing was watching.
        await self.maintenance.rescue()
        # Before the first claim: a backlog loaded since the last ANALYZE would otherwise be
        # claimed with a plan made for a small table (measured on a 1,000,000-job backlog:
        # 650-2,600 jobs/s for the first ~35 s, against 12,000-16,000 with the refresh).
        await self.maintenance.refresh_statistics()
        self._listener = await self.driver.listen(self._on_notification, self.queues)
        self._completer.start()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="jobq-heartbeat")
        # Periodic jobs (jq.periodic): every worker enqueues each tick, keyed so one job results.
        scheduler = None if self.burst else start_scheduler(self.services, self._stopping, self.log)
        self.metrics.slots.inc(self.concurrency)  # summed over the workers of a process
        try:
            await self._claim_loop()
            await self._finish_in_flight()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.maintenance.stop()  # hands the lease over at once
            if scheduler is not None:
                scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler
            # Jobs have ended or been handed back: the children have nothing left to do, and
            # a thread still stuck in a task is not waited for (daemon threads: the process
            # can exit).
            if self._processes is not None:
                await self._processes.close()
            self._threads.shutdown(wait=False, cancel_futures=True)
            await self._completer.close()
            await self._listener.close()
            with contextlib.suppress(Exception):
                await self.driver.unregister_worker(self.id)
            self.metrics.slots.dec(self.concurrency)
            self.log.info("worker stopped", processed=self.processed)

    async def until_database_answers(
        self, step: Callable[[], Awaitable[object]], what: str
    ) -> bool:
        """Run a start-up step (migration, registration), retrying it through an outage
        with the claim loop's backoff; False if the worker was told to stop first.

        Without this, a worker that starts while the database is down or restarting (a
        supervisor's restart, or a process still starting when an outage begins) got
        DatabaseUnavailableError out of ``run()`` and exited 1, where a running worker
        rides the same outage out. Only outages are retried: other errors (a failed
        migration, a bad setting) still end the process at once."""
        backoff = 0.0
        while True:
            try:
                await step()
                return True
            except DatabaseUnavailableError as exc:
                if self._stopping.is_set():
                    return False
                backoff = min(5.0, self.rng.uniform(0.1, max(0.1, backoff * 3)))
                self.log.warning(
                    f"{what} failed; waiting for the database", error=str(exc), delay=backoff
                )
                await self._wait_any(self._stopping, timeout=backoff)
                if self._stopping.is_set():
                    return False

    async def _claim_loop(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running) - self._threads.stuck
            if free <= 0:
                self._slot_freed.clear()
                await self._wait_any(self._slot_freed, self._stopping)
                continue
            self._wake.clear()
            # At most half the slots per claim, so that the next claim is already on its way
            # to the database while the jobs of this one start and run: the database's work
            # and this process's overlap instead of taking turns.
            wanted = min(free, self._claim_size)
            try:
                jobs = await self._claim(wanted)
                backoff = 0.0
            except Exception as exc:  # outage: back off with jitter, keep the worker alive
                backoff = min(5.0, self.rng.uniform(0.1, max(0.1, backoff * 3)))
                self.log.warning("claim failed; backing off", error=str(exc), delay=backoff)
                await self._wait_any(self._stopping, timeout=backoff)
                continue
            self._meters.claimed(jobs)
            for job in jobs:
                self._start(job)
            if len(jobs) == wanted:
                continue  # there may be more: claim again as soon as a slot frees
            if self.burst and await self._drained():
                return
            await self._wait_any(self._wake, self._stopping, timeout=self.settings.poll_interval_s)

    @property
    def stuck_threads(self) -> int:
        """Threads of sync tasks still running past their job's timeout."""
        return self._threads.stuck

    def _on_stuck_threads(self, stuck: int) -> None:
        self.metrics.stuck_threads.set(stuck)
        if stuck > self._stuck_seen:
            self.metrics.threads_stuck.inc(stuck - self._stuck_seen)
            self.log.warning(
                "threads stuck past their timeout; claiming fewer jobs",
                stuck_threads=stuck,
                slots_left=self.concurrency - stuck,
            )
        self._stuck_seen = stuck
        self._slot_freed.set()

    def _process_pool(self) -> ProcessPool:
        if self._processes is None:
            self._processes = ProcessPool(
                self.settings.process_pool_size or os.cpu_count() or 1,
                worker_id=self.id,
                max_jobs_per_child=self.settings.process_max_jobs_per_child,
                memory_limit_mb=self.settings.process_memory_limit_mb,
                cancel_grace_s=self.settings.process_cancel_grace_s,
                metrics=self.metrics,
            )
        return self._processes

    async def _claim(self, wanted: int) -> list[Job]:
        queues = await self._claimable.current()  # the served ones less the paused
        if queues is not None and not queues:
            return []  # every queue it serves is paused
        if self._planner is not None:
            return await self._claim_weighted(self._planner, wanted, queues)
        return await self._claim_from(queues, wanted)

    async def _claim_from(self, queues: Sequence[str] | None, wanted: int) -> list[Job]:
        return await self.driver.claim_batch(
            ClaimParams(
                self.id,
                wanted,
                queues,
                limits=self._limits,
                fair_tenants=self.settings.tenant_fairness,
            )
        )

    async def _claim_weighted(
        self, planner: WeightedPlanner, wanted: int, queues: Sequence[str] | None
    ) -> list[Job]:
        """Split the free slots across the weighted queues and claim from each with the
        ordinary claim (limits and fairness apply per queue as they do to any claim).
        Slots a queue could not fill go, in the same claim, to the queues that filled
        theirs; a queue that came back short is skipped until a wake-up for it or the
        next poll interval, so an empty queue costs no round trip per claim."""
        now = time.monotonic()
        if now - self._planner_reset_at >= self.settings.poll_interval_s:
            planner.mark_has_work()
            self._planner_reset_at = now
        jobs: list[Job] = []
        among = None if queues is None else list(queues)
        while len(jobs) < wanted:
            shares = planner.split(wanted - len(jobs), among)
            if not shares:
                break
            full: list[str] = []
            for queue, count in shares.items():
                claimed = await self._claim_from([queue], count)
                jobs += claimed
                if len(claimed) < count:
                    planner.mark_empty(queue)
                else:
                    full.append(queue)
            among = full
        return jobs

    async def _drained(self) -> bool:
        """Burst mode's end: nothing running, nothing unwritten, nothing due."""
        if self._running:
            self._slot_freed.clear()
            await self._wait_any(self._slot_freed, self._stopping)
            return False
        await self._completer.flushed()
        queues = await self._claimable.current()
        return queues == [] or await self.driver.count_claimable(queues) == 0

    @staticmethod
    async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _on_notification(self, kind: str, value: str) -> None:
        self._claimable.on_notification(kind, value)
        if kind == "resume":
            self._wake.set()
        elif kind == "new":
            if value == "*" or self.queues is None or value in self.queues:
                if self._planner is not None:
                    self._planner.mark_has_work(None if value == "*" else value)
                self._wake.set()
        elif kind == "cancel":
            with contextlib.suppress(ValueError):
                self._request_cancel(int(value))

    def _request_cancel(self, job_id: int) -> None:
        entry = self._running.get(job_id)
        if entry is not None and not entry[0].is_cancelled():
            entry[0].request_cancel("cancelled on request")
            self.log.info("cancel requested", job_id=job_id)

    # ------------------------------------------------------------------ running one job
    def _start(self, job: Job) -> None:
        ctx = JobContext(job, self.id, self.driver)
        # The loop's own create_task, unnamed: asyncio.create_task's wrapper and a name per
        # task cost about 4 µs a job more (measured with 1,000 tasks of a no-op).
        if self._tracer is None:
            task = asyncio.get_running_loop().create_task(self._execute(ctx))
        else:
            task = self._start_traced(ctx, self._tracer)
        self._running[job.id] = (ctx, task)

    def _start_traced(self, ctx: JobContext, tracer: JobTracer) -> asyncio.Task[None]:
        """The attempt's span, current inside the job's task (for the task's own spans and
        log lines), and its trace id as the exemplar of the job's time in queue."""
        ctx.span = span = tracer.start_attempt(ctx.job, self.id)
        self._meters.queued_traced(ctx.job, tracer.trace_id(span))
        loop = asyncio.get_running_loop()
        return loop.create_task(self._execute(ctx), context=tracer.context_with(span))

    async def _execute(self, ctx: JobContext) -> None:
        job = ctx.job
        outcome = "succeeded"
        failed_with: dict[str, Any] = {}  # the error and retry delay of a failed attempt
        began = time.perf_counter()
        try:
            task = self.registry.tasks.get(job.kind)
            if task is None:
                raise UnknownTaskError(f"no task named {job.kind!r} is registered with this worker")
            timeout = job.timeout_s
            executor = task.executor_for(self._sync_executor)
            if executor == "async":
                call = task.invoke(ctx, job.payload)
                result = await (asyncio.wait_for(call, timeout) if timeout else call)
            elif executor == "thread":
                result = await self._threads.run(
                    functools.partial(
                        contextvars.copy_context().run, task.func, ctx, **job.payload
                    ),
                    timeout or None,
                    job_id=job.id,
                    kind=job.kind,
                )
            else:
                result = await self._process_pool().run(ctx, task, timeout or None)
            if result is not None and not ctx.completed_in_transaction:
                _check_storable(result, self.settings.max_result_bytes)
        except asyncio.CancelledError:
            # Forced shutdown: _finish_in_flight hands the job back; nothing to record.
            self._running.pop(job.id, None)
            if ctx.span is not None and self._tracer is not None:
                self._tracer.end_attempt(ctx.span, "handed_back")
            raise
        except LeaseLostError as exc:
            # Another worker owns this job now; our transactional effects were rolled back.
            ctx.log.warning("lease lost; job left to its new owner", error=str(exc))
            outcome = "lease_lost"
        except JobCancelled as exc:
            reason = str(exc) or "cancelled"
            await self._finish_cancelled(job, reason)
            ctx.log.info("job cancelled", reason=reason)
            outcome = "cancelled"
        except BaseException as exc:  # a task's failure, whatever it raised
            failure = self._failure(job, task_or_none(self.registry, job.kind), exc)
            if ctx.span is not None and self._tracer is not None:
                self._tracer.attempt_failed(ctx.span, exc, failure.error)
                self._completer.fail(failure, ctx.span.get_span_context())
            else:
                self._completer.fail(failure)
            if (
                failure.retry_in_s is not None
                and failure.retry_in_s < self.settings.poll_interval_s
            ):
                # Due again before the next poll: wake the claim loop once it is (and once the
                # completer has written the failure), not a poll interval later.
                delay = failure.retry_in_s + self.settings.completion_flush_s + 0.01
                asyncio.get_running_loop().call_later(delay, self._wake.set)
            outcome = "failed" if failure.retry_in_s is None else "retried"
            failed_with = {"error": failure.error, "retry_in_s": failure.retry_in_s}
            if not self._trace_jobs:  # else the "job finished" line below says it: one line
                ctx.log.info("job " + outcome, **failed_with)
        else:
            if not ctx.completed_in_transaction:
                completion = Completion(job.id, job.attempt, result)
                if ctx.span is None:
                    self._completer.succeed(completion)
                else:
                    self._completer.succeed(completion, ctx.span.get_span_context())
            elif result is not None:
                await self._store_result(job, result)
        elapsed = time.perf_counter() - began
        if ctx.span is None or self._tracer is None:
            self._meters.finished(job, outcome, elapsed)
        else:
            self._meters.finished(job, outcome, elapsed, self._tracer.trace_id(ctx.span))
            self._tracer.end_attempt(ctx.span, outcome)
        if self._trace_jobs:
            self.log.log(
                self._trace_level,
                "job finished",
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempt,
                request_id=job.request_id,
                outcome=outcome,
                duration_ms=round(elapsed * 1000, 2),
                **failed_with,
            )
        self._running.pop(job.id, None)
        self.processed += 1
        self._slot_freed.set()

    def _failure(self, job: Job, task: Task[Any, Any] | None, exc: BaseException) -> Failure:
        # PostgreSQL cannot store U+0000 in text: escaped, so that the failure (and the batch
        # it is written with) can be stored.
        message = _describe(exc, job).replace("\x00", "\\x00")
        trace = exc.trace if isinstance(exc, TaskFailedInChild) else ""
        trace = (trace or "".join(traceback.format_exception(exc))).replace("\x00", "\\x00")
        retry_in: float | None = None
        if isinstance(exc, RetryAt):
            if job.attempt < job.max_attempts:
                retry_in = max(0.0, (exc.when - datetime.now(UTC)).total_seconds())
        elif task is not None and not isinstance(exc, DoNotRetry):
            if isinstance(exc, TaskFailedInChild):  # retry_for was matched in the child
                retryable = exc.retryable
            else:
                retryable = isinstance(exc, TimeoutError) or task.retry.should_retry(
                    job.attempt, exc
                )
            if retryable and job.attempt < job.max_attempts:
                retry_in = task.retry.delay_s(job.attempt, self.rng)
        return Failure(job.id, job.attempt, message, trace, retry_in)

    async def _store_result(self, job: Job, result: Any) -> None:
        try:
            _check_storable(result, self.settings.max_result_bytes)
        except DoNotRetry as exc:  # the job did succeed, in its transaction: only noted
            self.log.warning("result not stored", job_id=job.id, error=str(exc))
            return
        try:
            await self.driver.store_result(job.id, job.attempt, result)
        except Exception as exc:  # the job did succeed; only its return value is missing
            self.log.warning("could not store result", job_id=job.id, error=str(exc))

    async def _finish_cancelled(self, job: Job, reason: str) -> None:
        """Record the cancellation, retrying through outages: giving up would leave the job
        running until its lease expired, and then retry a job its owner asked to cancel."""
        await self._completer.flushed()
        delay = 0.05
        while True:
            try:
                await self.driver.finish_cancelled(job.id, job.attempt, reason)
                return
            except Exception as exc:
                self.log.warning("could not record a cancellation; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    # ------------------------------------------------------------------ shutdown
    async def _finish_in_flight(self) -> None:
        """Give running jobs the grace period (cut short by a second signal), then cancel the
        rest and hand their jobs back to the queue, attempt not counted."""
        if not self._running:
            return
        self.log.info("waiting for in-flight jobs", running=len(self._running))
        if not self._stop_now.is_set():
            all_done: asyncio.Future[Any] = asyncio.gather(
                *(task for _, task in self._running.values()), return_exceptions=True
            )
            stop_now: asyncio.Future[Any] = asyncio.create_task(self._stop_now.wait())
            await asyncio.wait(
                [all_done, stop_now],
                timeout=self.settings.shutdown_grace_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop_now.cancel()
        leftovers = list(self._running.values())
        for _ctx, task in leftovers:
            task.cancel()
        for ctx, task in leftovers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            try:
                await self.driver.hand_back(ctx.job.id, ctx.job.attempt, "worker shutting down")
                self.log.warning("job handed back at shutdown", job_id=ctx.job.id)
            except Exception as exc:  # its lease expires and rescue recovers it instead
                self.log.error(
                    "hand back failed; rescue will recover it", job_id=ctx.job.id, error=str(exc)
                )

    # ------------------------------------------------------------------ background duties
    async def _heartbeat_loop(self) -> None:
        beat_every = self.settings.heartbeat_s
        cancel_every = self.settings.cancel_poll_s
        rescue_every = self.maintenance.every_s
        loop = asyncio.get_running_loop()
        next_beat = next_rescue = loop.time()
        while True:
            await asyncio.sleep(cancel_every)
            now = loop.time()
            try:
                if self._running:
                    for job_id in await self.driver.cancel_requested_among(self.id):
                        self._request_cancel(job_id)
                if now >= next_beat:
                    next_beat = now + beat_every
                    if not await self.driver.heartbeat(self.id):
                        self.log.warning("registration was lost (presumed dead); re-registering")
                        await self.driver.register_worker(
                            WorkerRegistration(
                                self.id,
                                socket.gethostname(),
                                os.getpid(),
                                self.queues,
                                self.concurrency,
                            )
                        )
                if now >= next_rescue:
                    next_rescue = now + rescue_every
                    await self.maintenance.round()
            except Exception as exc:  # outages: keep beating, the next tick retries
                self.log.warning("heartbeat failed", error=str(exc))


class Stopping:
    """What ``Worker.stop()`` returns: awaiting it waits until the worker has stopped
    (at once if it is not running); ignoring it is fine too."""

    def __init__(self, finished: asyncio.Event) -> None:
        self._finished = finished

    def __await__(self) -> Generator[Any, None, bool]:
        return self._finished.wait().__await__()


class WorkerMeters:
    """The worker's metrics with their labelled children cached: looking a child up by its
    labels costs more than the no-op job it measures, and this runs for every job."""

    def __init__(self, metrics: Metrics, running: Callable[[], int]) -> None:
        self._metrics = metrics
        metrics.in_flight.set_function(running)  # read at scrape time, nothing per job
        metrics.slots_busy.set_function(running)
        self._claimed: dict[str, Any] = {}
        self._wait: dict[str, Any] = {}
        self._duration: dict[str, Any] = {}
        self._finished: dict[tuple[str, str], Any] = {}
        self._queue_time: dict[str, Any] = {}
        self._attempts: dict[str, Any] = {}
        # False when each job's time in queue is observed as it starts instead, with its
        # trace id (queued_traced).
        self.per_kind_queue_time = True

    def claimed(self, jobs: Sequence[Job]) -> None:
        """A claimed batch: one counter step per queue and kind, one wait observation per
        job by queue and one by kind."""
        by_queue: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        per_kind = self.per_kind_queue_time
        for job in jobs:
            queue = self._metrics.queue_label(job.queue)
            kind = self._metrics.kind_label(job.kind)
            by_queue[queue] = by_queue.get(queue, 0) + 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
            wait = self._wait.get(queue)
            if wait is None:
                wait = self._wait[queue] = self._metrics.job_wait.labels(queue)
            if job.started_at is not None:
                waited = max(0.0, (job.started_at - job.run_at).total_seconds())
                wait.observe(waited)
                if per_kind:
                    self._queue_time_of(kind).observe(waited)
        for queue, count in by_queue.items():
            counter = self._claimed.get(queue)
            if counter is None:
                counter = self._claimed[queue] = self._metrics.jobs_claimed.labels(queue)
            counter.inc(count)
        for kind, count in by_kind.items():
            attempts = self._attempts.get(kind)
            if attempts is None:
                attempts = self._attempts[kind] = self._metrics.job_attempts.labels(kind)
            attempts.inc(count)

    def _queue_time_of(self, kind: str) -> Any:
        child = self._queue_time.get(kind)
        if child is None:
            child = self._queue_time[kind] = self._metrics.job_queue_time.labels(kind)
        return child

    def queued_traced(self, job: Job, trace_id: str) -> None:
        if job.started_at is not None:
            waited = max(0.0, (job.started_at - job.run_at).total_seconds())
            self._queue_time_of(self._metrics.kind_label(job.kind)).observe_traced(waited, trace_id)

    def finished(self, job: Job, outcome: str, seconds: float, trace_id: str | None = None) -> None:
        kind = self._metrics.kind_label(job.kind)
        key = (kind, outcome)
        counter = self._finished.get(key)
        if counter is None:
            counter = self._finished[key] = self._metrics.jobs_finished.labels(*key)
        counter.inc()
        duration = self._duration.get(kind)
        if duration is None:
            duration = self._duration[kind] = self._metrics.job_duration.labels(kind)
        if trace_id is None:
            duration.observe(seconds)
        else:
            duration.observe_traced(seconds, trace_id)
        if outcome == "retried":
            self._metrics.job_retries.labels(kind).inc()
        elif outcome == "failed":
            self._metrics.job_dead_letters.labels(kind).inc()


def task_or_none(registry: TaskRegistry, kind: str) -> Task[Any, Any] | None:
    return registry.tasks.get(kind)


def _check_storable(result: Any, limit: int) -> None:
    """Refuse, as this job's own failure (not retried: it would fail again), a return value
    the database cannot hold, or larger than JOBQ_MAX_RESULT_BYTES. Found in the completer
    instead, it failed the write of the whole batch of outcomes, and every retry of it, so
    the worker never got past it; and writing a huge one held the worker's event loop for
    seconds (its heartbeat too, until its lease expired and the job ran again)."""
    try:
        encoded = storable_json(result, "a result")
    except InvalidJobError as exc:
        raise DoNotRetry(f"the task's return value cannot be stored: {exc}") from None
    size = len(encoded) if encoded.isascii() else len(encoded.encode())
    if size > limit:
        raise DoNotRetry(
            f"the task's return value is {size} bytes as JSON; the limit is {limit} "
            "(JOBQ_MAX_RESULT_BYTES)"
        )


def _describe(exc: BaseException, job: Job) -> str:
    if isinstance(exc, CHILD_FAILURES):  # already worded for the job's error
        return str(exc)
    if isinstance(exc, TimeoutError) and job.timeout_s:
        return f"timed out after {job.timeout_s:g}s"
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # the exception's own __str__ failed: tell what can be told
        try:
            text = f"(str() failed) {object.__repr__(exc)}"
        except Exception:
            text = "(str() failed)"
    return f"{name}: {text}" if text else name
