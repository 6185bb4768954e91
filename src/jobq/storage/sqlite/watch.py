"""Wake-ups across processes for SQLite, which has no LISTEN/NOTIFY.

Another process's commit shows in the database file's change counter, ``PRAGMA
data_version``, which SQLite reads from the WAL index in shared memory, without touching the
disk. A thread asks it every ``WATCH_EVERY_S`` over a connection of its own and, when it
moved, wakes this process's listeners for every queue: a job enqueued by ``jobq api`` (or any
other process) starts in a ``jobq worker`` some milliseconds later, instead of at the
worker's next poll (``JOBQ_POLL_INTERVAL_S``, a second by default).

The counter moves for any commit by another connection, this process's own writer included,
and tells nothing of what changed; a wake with nothing new costs an idle worker one claim
that finds nothing (and writes nothing, so it wakes no one in turn).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from ..base import NotificationHandler
from ..common import LocalBus, LocalListener

WATCH_EVERY_S = 0.01


class CommitWatcher(LocalListener):
    """This process's notifications (the local bus), and a ``("new", "*")`` for each change
    another connection commits to the file."""

    def __init__(self, bus: LocalBus, handler: NotificationHandler, path: Path) -> None:
        super().__init__(bus, handler)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch,
            args=(path, asyncio.get_running_loop(), handler),
            name="jobq-sqlite-watch",
            daemon=True,
        )
        self._thread.start()

    def _watch(
        self, path: Path, loop: asyncio.AbstractEventLoop, handler: NotificationHandler
    ) -> None:
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
        except sqlite3.Error:
            return  # the worker's polling still finds the work
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._stop.wait(WATCH_EVERY_S):
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    loop.call_soon_threadsafe(handler, "new", "*")
        except (sqlite3.Error, RuntimeError):  # a vanished file; a loop already closed
            pass
        finally:
            conn.close()

    async def close(self) -> None:
        await super().close()
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
