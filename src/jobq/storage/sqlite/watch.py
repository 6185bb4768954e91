"""Wake-ups across processes for SQLite, which has no LISTEN/NOTIFY.

Another process's commit shows in the database file's change counter, ``PRAGMA
data_version``, which SQLite reads from the WAL index in shared memory, without touching the
disk. A thread asks it every ``WATCH_EVERY_S`` over a connection of its own and, when it
moved and a job is due, wakes this process's listeners for every queue: a job enqueued by
``jobq api`` (or any other process) starts in a ``jobq worker`` some milliseconds later,
instead of at the worker's next poll (``JOBQ_POLL_INTERVAL_S``, a second by default).

The counter moves for any commit by another connection, this process's own writer included
(completions, heartbeats), and tells nothing of what changed. So the thread first looks
whether anything is due in the queues the listener serves, a read through a claim index that
takes no lock: a wake that finds nothing would cost the worker a claim, and every claim takes
the file's write lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..base import NotificationHandler
from ..common import LocalBus, LocalListener

WATCH_EVERY_S = 0.01
# Through the claim indexes, as the claims go (queries.sql): left to itself, the planner took
# the (status, id) index, which walks every queued job of the other queues.
_DUE_ANY_QUEUE = (
    "SELECT 1 FROM jobq_jobs INDEXED BY jobq_jobs_claim_any_queue"
    " WHERE status IN ('queued', 'retrying') AND run_at <= ? LIMIT 1"
)
_DUE_IN_QUEUES = (
    "SELECT 1 FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_queue"
    " WHERE status IN ('queued', 'retrying') AND run_at <= ?"
    " AND queue IN (SELECT value FROM json_each(?)) LIMIT 1"
)

log = logging.getLogger("jobq.storage.sqlite")


def _open(path: Path) -> tuple[sqlite3.Connection, int]:
    # mode=rw: a file that is gone is an error here, not a new empty database.
    uri = f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        return conn, int(conn.execute("PRAGMA data_version").fetchone()[0])
    except sqlite3.Error:
        conn.close()
        raise


class CommitWatcher(LocalListener):
    """This process's notifications (the local bus), and a ``("new", "*")`` when another
    connection committed to the file and a job is due in ``queues`` (None: in any queue)."""

    def __init__(
        self,
        bus: LocalBus,
        handler: NotificationHandler,
        conn: sqlite3.Connection,
        version: int,
        queues: Sequence[str] | None = None,
    ) -> None:
        super().__init__(bus, handler)
        self.changes_seen = 0  # commits the thread has looked at (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch,
            args=(conn, version, asyncio.get_running_loop(), handler, _due_check(queues)),
            name="jobq-sqlite-watch",
            daemon=True,
        )
        self._thread.start()

    @classmethod
    async def start(
        cls,
        bus: LocalBus,
        handler: NotificationHandler,
        path: Path,
        queues: Sequence[str] | None = None,
    ) -> LocalListener:
        """A watcher whose counter was read before this returns, so that no commit after it
        goes unseen; the local bus alone when the file cannot be opened for it."""
        try:
            conn, version = await asyncio.to_thread(_open, path)
        except sqlite3.Error as exc:
            log.warning("cannot watch %s for other processes' commits (%s): polling", path, exc)
            return LocalListener(bus, handler)
        return cls(bus, handler, conn, version, queues)

    def _watch(
        self,
        conn: sqlite3.Connection,
        seen: int,
        loop: asyncio.AbstractEventLoop,
        handler: NotificationHandler,
        due: tuple[str, tuple[object, ...]],
    ) -> None:
        query, queue_args = due
        try:
            # The loop's end stops the thread too, should close() never be called.
            while not self._stop.wait(WATCH_EVERY_S) and not loop.is_closed():
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version == seen:
                    continue
                seen = version
                if conn.execute(query, (time.time(), *queue_args)).fetchone():
                    loop.call_soon_threadsafe(handler, "new", "*")
                self.changes_seen += 1
        except sqlite3.Error as exc:
            log.warning("stopped watching for other processes' commits (%s): polling", exc)
        except RuntimeError:  # the loop closed between the check and the call
            pass
        finally:
            conn.close()

    async def close(self) -> None:
        await super().close()
        self._stop.set()
        await asyncio.to_thread(self._thread.join)


def _due_check(queues: Sequence[str] | None) -> tuple[str, tuple[object, ...]]:
    """The due check's query and its arguments after the time: a worker serving some queues
    is not woken for jobs in others (it would make a claim that finds nothing)."""
    if queues is None:
        return _DUE_ANY_QUEUE, ()
    return _DUE_IN_QUEUES, (json.dumps(list(queues)),)
