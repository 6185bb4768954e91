"""A real jobq server for the browser tests: uvicorn on a free loopback port, in a thread of
this process, serving the API and the dashboard and running a worker with the tasks below.

In-process so the tasks can be steered from the test (a job that fails once, a job that runs
until cancelled); the HTTP, the worker and the database are the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from jobq import JobContext, JobQueue, Settings
from jobq.api.app import create_app
from jobq.dashboard import DashboardAuth, Identity, set_key_resolver

# API keys the test server knows, and what each may do (the security layer's keys plug into
# the same resolver).
KEYS = {
    "admin-key": Identity("admin key", frozenset({"admin"})),
    "reader-key": Identity("reader key", frozenset({"jobs:read"})),
    "tenant-key": Identity("tenant key", frozenset({"jobs:manage"}), tenant="acme"),
}


async def resolve(key: str) -> Identity | None:
    return KEYS.get(key)


def make_queue(db_url: str) -> JobQueue:
    jq = JobQueue(
        settings=Settings(
            database_url=db_url,
            poll_interval_s=0.1,
            completion_flush_s=0.005,
            heartbeat_s=0.2,
            shutdown_grace_s=2.0,
            log_level="WARNING",
            retry_base_s=0.0,
            retry_cap_s=0.0,
        )
    )
    failed_once: set[int] = set()

    @jq.task(max_attempts=1)
    async def stepper(ctx: JobContext, steps: int = 20, pause: float = 0.25) -> str:
        for i in range(1, steps + 1):
            await asyncio.sleep(pause)  # the job's own work, paced so a browser can watch
            await ctx.progress(i * 100 / steps, f"step {i} of {steps}")
        return "stepped"

    @jq.task(max_attempts=1)
    async def fails_once(ctx: JobContext) -> str:
        if ctx.job.id not in failed_once:
            failed_once.add(ctx.job.id)
            raise RuntimeError("the first run of this job fails")
        return "second time lucky"

    @jq.task
    async def runs_until_cancelled(ctx: JobContext) -> None:
        for _ in range(2400):  # two minutes at most
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.05)

    @jq.task
    async def noop(ctx: JobContext) -> str:
        return "done"

    jq.limit_queue("limited", max_running=2)
    jq.periodic("*/5 * * * *", name="tidy_up")(noop)
    return jq


@contextmanager
def serving(db_url: str, *, keys: bool) -> Iterator[str]:
    """Serve on a free port; yield the base URL. ``keys``: sign-in with the KEYS above;
    else no keys (everyone an administrator)."""
    jq = make_queue(db_url)
    app = create_app(jq, worker=jq.worker(concurrency=8))
    if keys:
        set_key_resolver(app, DashboardAuth(resolve_key=resolve))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:  # a condition with a deadline
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
