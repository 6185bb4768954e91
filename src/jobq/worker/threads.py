"""The thread executor: the threads sync tasks run in, and the count of those stuck.

Python cannot stop a thread. A sync task that outlives its timeout fails its attempt, but its
thread runs on and holds a thread of the pool. Three rules keep that from draining the
worker:

- the pool has one thread per slot of the worker (its concurrency), and a stuck thread keeps
  its slot: the worker claims that many fewer jobs until the thread returns, so every job it
  does claim gets a thread at once;
- a job's timeout runs from when its thread starts it, not from when it was handed to the
  pool, so a job never fails as "timed out" without having run;
- the threads are daemon threads: shutdown waits ``shutdown_grace_s`` for running jobs and
  then the process exits, stuck threads or not (the standard ThreadPoolExecutor joins its
  threads at interpreter exit, which would keep a worker alive as long as its hung tasks).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import structlog

log = structlog.get_logger("jobq.worker")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TaskThreads(Executor):
    """A fixed-size pool of daemon threads, started as they are needed."""

    def __init__(
        self, size: int, *, on_stuck: Callable[[int], None] | None = None, name: str = "jobq"
    ) -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self.size = size
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False
        self.stuck = 0  # threads still running a job that already timed out
        self._on_stuck = on_stuck

    # ------------------------------------------------------------------ Executor
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the task threads are shut down")
            self._work.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._name}-task-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            elif self._idle > 0:
                self._idle -= 1
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work. ``wait`` joins only threads that are not stuck: a stuck thread
        may never return, and the process must still be able to exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait and not self.stuck:
            for thread in threads:
                thread.join()

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # the task's failure, handed to its awaiter
                    future.set_exception(exc)
            del item, future  # drop references to the finished job while idle
            with self._lock:
                self._idle += 1

    # ------------------------------------------------------------------ running a task
    async def run(self, call: Callable[[], Any], timeout: float | None, **log_ids: Any) -> Any:
        """Run ``call`` in a thread; its timeout counts from when the thread starts it. On
        timeout the thread is counted as stuck until it returns, and TimeoutError raised."""
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        def begin() -> Any:
            loop.call_soon_threadsafe(_resolve, started)
            return call()

        done = asyncio.wrap_future(self.submit(begin), loop=loop)
        if timeout is None:
            return await done
        await asyncio.wait({started, done}, return_when=asyncio.FIRST_COMPLETED)
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            if not done.done():
                self._stuck_since_timeout(done, timeout, log_ids)
            raise

    def _stuck_since_timeout(
        self, done: asyncio.Future[Any], timeout: float, log_ids: dict[str, Any]
    ) -> None:
        self.stuck += 1
        self._report()
        log.warning(
            "sync task still running after its timeout; its thread and slot stay taken",
            timeout_s=timeout,
            stuck_threads=self.stuck,
            **log_ids,
        )

        def returned(_: asyncio.Future[Any]) -> None:
            self.stuck -= 1
            self._report()
            log.info("stuck thread returned; slot free again", stuck_threads=self.stuck, **log_ids)

        done.add_done_callback(returned)
        # Its outcome no longer matters (the attempt already failed): retrieved here, so
        # asyncio does not report an exception nobody awaited.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _report(self) -> None:
        if self._on_stuck is not None:
            self._on_stuck(self.stuck)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
