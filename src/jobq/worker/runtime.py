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
import logging
import os
import random
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
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
)
from ..model import Job, JobStatus
from ..observability.metrics import Metrics, bound_labels
from ..periodic import start_scheduler
from ..storage.base import ClaimParams, Completion, Failure, Listener, WorkerRegistration
from ..storage.common import storable_json
from .completer import Completer
from .context import JobContext

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..task import Task

log = structlog.get_logger("jobq.worker")

# The name of the lease whose holder runs periodic maintenance (rescue, retention).
MAINTENANCE_LEASE = "maintenance"
# The leader's upkeep of the jobs table (retention, VACUUM) runs this often while there is
# work for it: a busy queue finishes tens of thousands of jobs a second, and every one of them
# leaves dead row versions that each claim walks past until they are cleaned up.
HOUSEKEEPING_EVERY_S = 1.0
PURGE_BATCH = 2000  # jobs deleted per statement: short locks, few round trips
PURGE_BATCHES_PER_STATUS = 50  # a round's most for one status, so that each gets its turn


class Worker:
    def __init__(
        self,
        jobq: JobQueue,
        *,
        queues: Sequence[str] | None,
        concurrency: int,
        burst: bool = False,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.jobq = jobq
        self.settings = jobq.settings
        self.driver = jobq.driver
        self.queues = list(queues) if queues is not None else None
        # Read once: tasks are registered before workers start. None keeps the plain claim.
        self._limits = jobq.claim_limits() or None
        self.concurrency = concurrency
        self._claim_size = (concurrency + 1) // 2
        self.burst = burst
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rng = rng or random.Random()
        self.log = log.bind(worker_id=self.id)
        self.metrics = metrics or Metrics()
        bound_labels(self.metrics, jobq, queues or ())
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
        self._completer = Completer(
            self.driver,
            flush_s=self.settings.completion_flush_s,
            batch_size=self.settings.completion_batch_size,
        )
        self._listener: Listener | None = None
        self.processed = 0  # jobs finished (any outcome) by this worker
        self.is_leader = False
        self._statistics: asyncio.Task[None] | None = None  # the leader's statistics refresh
        self._housekeeping: asyncio.Task[None] | None = None  # the leader's retention, VACUUM
        # VACUUM and ANALYZE take the same table lock, and each skips the table when the other
        # holds it: this process runs one at a time, so that neither is skipped for the other.
        self._table_upkeep = asyncio.Lock()

    # ------------------------------------------------------------------ control
    def stop(self, *, graceful: bool = True) -> None:
        """Stop claiming; in-flight jobs get ``shutdown_grace_s`` to finish (none if not
        graceful), then they are cancelled and handed back to the queue."""
        if self._stopping.is_set() or not graceful:
            self._stop_now.set()
        self._stopping.set()
        self._wake.set()

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
        # Jobs left running by workers that died while nothing was watching (seed 000's
        # startup sweep).
        await self._rescue()
        # Before the first claim: a backlog loaded since the last ANALYZE would otherwise be
        # claimed with a plan made for a small table (measured on a 1,000,000-job backlog:
        # 650-2,600 jobs/s for the first ~35 s, against 12,000-16,000 with the refresh).
        await self._refresh_statistics()
        self._listener = await self.driver.listen(self._on_notification, self.queues)
        self._completer.start()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="jobq-heartbeat")
        # Periodic jobs (jq.periodic): every worker enqueues each tick, keyed so one job results.
        scheduler = None if self.burst else start_scheduler(self.jobq, self._stopping, self.log)
        try:
            await self._claim_loop()
            await self._finish_in_flight()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for duty in (self._statistics, self._housekeeping):
                if duty is not None:
                    duty.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await duty
            if scheduler is not None:
                scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler
            await self._completer.close()
            await self._listener.close()
            with contextlib.suppress(Exception):
                if self.is_leader:  # let another worker take over without waiting the lease
                    await self.driver.give_up_leadership(MAINTENANCE_LEASE, self.id)
                await self.driver.unregister_worker(self.id)
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
            free = self.concurrency - len(self._running)
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
                jobs = await self.driver.claim_batch(
                    ClaimParams(
                        self.id,
                        wanted,
                        self.queues,
                        limits=self._limits,
                        fair_tenants=self.settings.tenant_fairness,
                    )
                )
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

    async def _drained(self) -> bool:
        """Burst mode's end: nothing running, nothing unwritten, nothing due."""
        if self._running:
            self._slot_freed.clear()
            await self._wait_any(self._slot_freed, self._stopping)
            return False
        await self._completer.flushed()
        return await self.driver.count_claimable(self.queues) == 0

    @staticmethod
    async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _on_notification(self, kind: str, value: str) -> None:
        if kind == "new":
            if value == "*" or self.queues is None or value in self.queues:
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
        task = asyncio.get_running_loop().create_task(self._execute(ctx))
        self._running[job.id] = (ctx, task)

    async def _execute(self, ctx: JobContext) -> None:
        job = ctx.job
        outcome = "succeeded"
        began = time.perf_counter()
        try:
            task = self.jobq.tasks.get(job.kind)
            if task is None:
                raise DoNotRetry(f"no task named {job.kind!r} is registered with this worker")
            timeout = job.timeout_s
            call = task.invoke(ctx, job.payload)
            result = await (asyncio.wait_for(call, timeout) if timeout else call)
            if result is not None and not ctx.completed_in_transaction:
                _check_storable(result, self.settings.max_result_bytes)
        except asyncio.CancelledError:
            # Forced shutdown: _finish_in_flight hands the job back; nothing to record.
            self._running.pop(job.id, None)
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
            failure = self._failure(job, task_or_none(self.jobq, job.kind), exc)
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
            ctx.log.info("job " + outcome, error=failure.error, retry_in_s=failure.retry_in_s)
        else:
            if not ctx.completed_in_transaction:
                self._completer.succeed(Completion(job.id, job.attempt, result))
            elif result is not None:
                await self._store_result(job, result)
        elapsed = time.perf_counter() - began
        self._meters.finished(job, outcome, elapsed)
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
            )
        self._running.pop(job.id, None)
        self.processed += 1
        self._slot_freed.set()

    def _failure(self, job: Job, task: Task[Any, Any] | None, exc: BaseException) -> Failure:
        # PostgreSQL cannot store U+0000 in text: escaped, so that the failure (and the batch
        # it is written with) can be stored.
        message = _describe(exc, job).replace("\x00", "\\x00")
        trace = "".join(traceback.format_exception(exc)).replace("\x00", "\\x00")
        retry_in: float | None = None
        if isinstance(exc, RetryAt):
            if job.attempt < job.max_attempts:
                retry_in = max(0.0, (exc.when - datetime.now(UTC)).total_seconds())
        elif task is not None and not isinstance(exc, DoNotRetry):
            retryable = isinstance(exc, TimeoutError) or task.retry.should_retry(job.attempt, exc)
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
        cancel_every = self._cancel_poll_every_s
        rescue_every = self._maintenance_every_s
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
                    await self._maintain()
            except Exception as exc:  # outages: keep beating, the next tick retries
                self.log.warning("heartbeat failed", error=str(exc))

    async def _maintain(self) -> None:
        """Periodic duties, run by one worker at a time: whoever holds the maintenance lease
        (renewed every round, lost ``lease_s`` after its holder stops renewing)."""
        leader = await self.driver.take_leadership(
            MAINTENANCE_LEASE, self.id, self.settings.lease_s
        )
        if leader != self.is_leader:
            self.log.info("maintenance leadership " + ("taken" if leader else "lost"))
        self.is_leader = leader
        if leader:
            await self._rescue()
            # In tasks of their own: a purge that catches up, a VACUUM or an ANALYZE of a
            # large table takes seconds, and this loop must keep heartbeating meanwhile.
            if self._housekeeping is None or self._housekeeping.done():
                self._housekeeping = asyncio.create_task(
                    self._keep_house(), name="jobq-housekeeping"
                )
            if self._statistics is None or self._statistics.done():
                self._statistics = asyncio.create_task(
                    self._refresh_statistics(), name="jobq-statistics"
                )

    async def _refresh_statistics(self) -> None:
        try:
            async with self._table_upkeep:
                refreshed = await self.driver.refresh_statistics()
            if refreshed:
                self.log.info("refreshed the jobs table's planner statistics")
        except Exception as exc:  # an optimisation: the next round tries again
            self.log.warning("statistics refresh failed", error=str(exc))

    @property
    def _cancel_poll_every_s(self) -> float:
        """How often the heartbeat loop ticks, looking for cancel requests."""
        return min(0.5, self.settings.heartbeat_s)

    @property
    def _maintenance_every_s(self) -> float:
        """How often the heartbeat loop takes the maintenance lease and rescues."""
        return max(self.settings.lease_s / 3, self._cancel_poll_every_s)

    async def _keep_house(self) -> None:
        """While this worker leads: retention, and a VACUUM of the jobs table where nothing
        else keeps up with it, side by side (on a busy queue the purge is hardly ever done;
        the VACUUM must not wait for it)."""
        await asyncio.gather(self._retention_rounds(), self._vacuum_rounds())

    async def _retention_rounds(self) -> None:
        while self.is_leader and not self._stopping.is_set():
            pause = self._maintenance_every_s
            try:
                purged, behind = await self._purge_expired()
                # Jobs were due: more will be by the next second, so the next round comes
                # then (or at once when this one stopped short). Nothing was: the next round
                # at the maintenance pace, since even a purge that finds nothing reads the
                # finished jobs it checks (SQLite walks every succeeded one).
                pause = 0.0 if behind else HOUSEKEEPING_EVERY_S if purged else pause
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("retention failed", error=str(exc))
            await self._wait_any(self._stopping, timeout=pause)

    async def _vacuum_rounds(self) -> None:
        threshold = self.settings.vacuum_dead_rows
        while threshold and self.is_leader and not self._stopping.is_set():
            try:
                async with self._table_upkeep:
                    vacuumed = await self.driver.vacuum_jobs(threshold)
                if vacuumed:
                    self.log.debug("vacuumed the jobs table")
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("vacuum failed", error=str(exc))
            await self._wait_any(self._stopping, timeout=HOUSEKEEPING_EVERY_S)

    async def _purge_expired(self) -> tuple[int, bool]:
        """Retention: delete finished jobs past their keep-time, in batches, until none is
        due or PURGE_BATCHES_PER_STATUS batches of a status are done. Returns how many were
        deleted, and whether any status was left with jobs due. (Before, a round deleted at
        most 20 batches of 500, rounds 10 s apart: 1,000 jobs a second, however fast they
        finished.)"""
        rules = [
            (JobStatus.SUCCEEDED, self.settings.retention),
            (JobStatus.CANCELLED, self.settings.retention),
            (JobStatus.FAILED, self.settings.failed_retention),
        ]
        total, behind = 0, False
        for status, keep in rules:
            purged = 0
            for _ in range(PURGE_BATCHES_PER_STATUS):
                if not self.is_leader or self._stopping.is_set():
                    break
                deleted = await self.driver.purge_finished(
                    status, keep.total_seconds(), PURGE_BATCH
                )
                purged += deleted
                if deleted < PURGE_BATCH:
                    break
            else:
                behind = True
            if purged:
                self.log.info("retention purged jobs", status=str(status), count=purged)
            total += purged
        return total, behind

    async def _rescue(self) -> None:
        try:
            rescued = await self.driver.rescue_stale(self.settings.lease_s)
        except Exception as exc:
            self.log.warning("rescue failed", error=str(exc))
            return
        if rescued:
            self.log.warning("rescued jobs of dead workers", job_ids=rescued)
            self._wake.set()


class WorkerMeters:
    """The worker's metrics with their labelled children cached: looking a child up by its
    labels costs more than the no-op job it measures, and this runs for every job."""

    def __init__(self, metrics: Metrics, running: Callable[[], int]) -> None:
        self._metrics = metrics
        metrics.in_flight.set_function(running)  # read at scrape time, nothing per job
        self._claimed: dict[str, Any] = {}
        self._wait: dict[str, Any] = {}
        self._duration: dict[str, Any] = {}
        self._finished: dict[tuple[str, str], Any] = {}

    def claimed(self, jobs: Sequence[Job]) -> None:
        """A claimed batch: one counter step per queue, one wait observation per job."""
        by_queue: dict[str, int] = {}
        for job in jobs:
            queue = self._metrics.queue_label(job.queue)
            by_queue[queue] = by_queue.get(queue, 0) + 1
            wait = self._wait.get(queue)
            if wait is None:
                wait = self._wait[queue] = self._metrics.job_wait.labels(queue)
            if job.started_at is not None:
                wait.observe(max(0.0, (job.started_at - job.run_at).total_seconds()))
        for queue, count in by_queue.items():
            counter = self._claimed.get(queue)
            if counter is None:
                counter = self._claimed[queue] = self._metrics.jobs_claimed.labels(queue)
            counter.inc(count)

    def finished(self, job: Job, outcome: str, seconds: float) -> None:
        kind = self._metrics.kind_label(job.kind)
        key = (kind, outcome)
        counter = self._finished.get(key)
        if counter is None:
            counter = self._finished[key] = self._metrics.jobs_finished.labels(*key)
        counter.inc()
        duration = self._duration.get(kind)
        if duration is None:
            duration = self._duration[kind] = self._metrics.job_duration.labels(kind)
        duration.observe(seconds)


def task_or_none(jobq: JobQueue, kind: str) -> Task[Any, Any] | None:
    return jobq.tasks.get(kind)


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
