"""Group commit for single-job enqueues from concurrent callers.

Each plain one-job enqueue (``jq.enqueue``, ``task.defer``, ``POST /jobs``; which jobs are
plain is ``shares_an_insert``'s to say) hands its job to the JobQueue's GroupCommit and
waits. While one INSERT is in flight, the jobs of calls arriving meanwhile gather; when it
returns, they all go in the next INSERT together. A call that finds nothing in flight sends
its own INSERT at once (no timer, no added latency, and no task or future for a lone
producer to pay for); under concurrency the calls pay one statement and one durable commit
per batch instead of per call, which is where the time of a single enqueue goes (round
trip, commit, driver overhead).

Each caller still gets its own answer (its Job) or, when the batch's insert fails (the
database unreachable), that error. Cancelling a caller whose job has not been sent yet
takes its job out; once its batch is sent, the job is inserted (or fails) with the batch,
and the cancelled caller does not learn which, as with any statement cancelled after it
reached the server. A caller that sent its own INSERT cancels that statement, as it would
without group commit.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence

from .config import Settings
from .storage.base import Enqueued, NewJob

Insert = Callable[[Sequence[NewJob]], Awaitable[list[Enqueued]]]
MAX_BATCH = 500


def shares_an_insert(job: NewJob, settings: Settings) -> bool:
    """Whether ``job`` may go in one INSERT with other callers' jobs: only a plain one. Not
    when a check that can refuse this one job runs in the insert's transaction (a parent
    that does not exist, its tenant at the queued-jobs quota): it would fail every job of
    the batch. Nor with an idempotency or unique key: a batch with keys is answered after
    its INSERT committed (the keys' holders are looked up then), and a lost race there
    (ContentionError, "enqueue again") would reach callers whose jobs were stored, who
    would then enqueue them twice."""
    return (
        not job.depends_on
        and job.idempotency_key is None
        and job.unique_key is None
        and not (job.tenant is not None and settings.tenant_max_queued)
    )


class _Waiter:
    __slots__ = ("future", "job")

    def __init__(self, job: NewJob, future: asyncio.Future[Enqueued]) -> None:
        self.job = job
        self.future = future


class GroupCommit:
    """The batches of one event loop. Jobs given to ``enqueue`` must be checked already
    (``refuse_unstorable_job``): a bad job would fail its whole batch."""

    def __init__(self, insert: Insert, *, max_batch: int = MAX_BATCH) -> None:
        self.loop = asyncio.get_running_loop()
        self._insert = insert
        self._max_batch = max_batch
        self._pending: list[_Waiter] = []
        self._flusher: asyncio.Task[None] | None = None
        self._alone = 0  # lone callers' inserts in flight (see enqueue)
        self._idle = asyncio.Event()  # set while nothing is in flight: what close() waits for
        self._idle.set()

    async def enqueue(self, job: NewJob) -> Enqueued:
        if self._alone or (self._flusher is not None and not self._flusher.done()):
            return await self._join(job)
        # Nothing in flight: the caller sends its own INSERT, with no task or future between
        # it and its statement; calls arriving meanwhile gather behind it.
        self._alone += 1
        self._idle.clear()
        try:
            (answer,) = await self._insert([job])
            return answer
        finally:
            self._alone -= 1
            self._start_flusher()

    async def _join(self, job: NewJob) -> Enqueued:
        waiter = _Waiter(job, self.loop.create_future())
        self._pending.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter in self._pending:  # not sent yet: never inserted
                self._pending.remove(waiter)
            raise

    def _start_flusher(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            return
        if not self._pending:
            if not self._alone:
                self._idle.set()
            return
        # A context of its own: the caller that started it has its span and log context,
        # which are not those of the statements sent for everyone.
        self._flusher = self.loop.create_task(
            self._flush(), name="jobq-group-commit", context=contextvars.Context()
        )

    async def _flush(self) -> None:
        try:
            await self._flush_pending()
        finally:
            self._flusher = None
            self._start_flusher()

    async def _flush_pending(self) -> None:
        while True:
            if not self._pending:
                # One turn of the loop: the callers just answered run first, and those that
                # enqueue again at once join the next batch rather than each going alone.
                await asyncio.sleep(0)
                if not self._pending:
                    return
            # A waiter already done was cancelled before its job was sent (Task.cancel marks
            # the future at once; its caller takes it out of _pending only when it next runs).
            batch = [w for w in self._pending[: self._max_batch] if not w.future.done()]
            del self._pending[: self._max_batch]
            if not batch:
                continue
            try:
                answers = await self._insert([w.job for w in batch])
                for waiter, answer in zip(batch, answers, strict=True):
                    if not waiter.future.done():  # its caller may have been cancelled meanwhile
                        waiter.future.set_result(answer)
            except Exception as exc:  # every waiter of the batch gets the error
                for waiter in batch:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
            except BaseException:  # cancelled (the loop is shutting down), or interrupted
                for waiter in batch + self._pending:
                    waiter.future.cancel()  # no waiter left hanging
                self._pending.clear()
                raise

    async def close(self) -> None:
        """Wait until every job handed in so far is inserted (or has failed)."""
        await self._idle.wait()
