"""``jobq serve`` and ``jobq api``: bind the port first, then prepare, then serve."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import structlog
import typer

from ..app import JobQueue
from ..config import Settings, is_loopback
from ..errors import JobqError
from ..process import settle_heap
from ..worker.simulated import PLANS
from .common import CliError, exit_for, prepare, run

log = structlog.get_logger("jobq.cli")

Host = Annotated[
    str | None,
    typer.Option("--host", envvar="JOBQ_API_HOST", help="Listen address", show_default=False),
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port", envvar="JOBQ_API_PORT", min=0, max=65535, help="Listen port (default 8000)"
    ),
]
InsecureNoAuth = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="Serve a non-loopback address without API keys: anyone who reaches it can "
        "read and change every job",
    ),
]


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed or enqueued, so a busy port
    is one line naming the option that changes it. uvicorn serves on this very socket."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise CliError(
            f"cannot listen on {host!r}: {exc.strerror} (--host, JOBQ_API_HOST)"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {port} on {host} is already in use: choose another with --port "
                "(or JOBQ_API_PORT)"
            ) from None
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror} (--host/JOBQ_API_HOST, "
            "--port/JOBQ_API_PORT)"
        ) from None
    sock.listen(2048)  # uvicorn's default backlog; holds the port from now on
    return sock


def serve_command(
    jobq: JobQueue,
    settings: Settings,
    *,
    insecure_no_auth: bool,
    development: bool,
    demo_jobs: int = 0,
) -> None:
    """Prepare the database (``development``: migrate; else check the schema) and the keys,
    bind the port, enqueue any demo jobs, then serve (``development``: with a worker in the
    process). Nothing is enqueued nor announced on a port that cannot be had."""
    keyless = run(lambda: _prepare_to_serve(jobq, settings, insecure_no_auth, development))
    try:
        sock = bind(settings.api_host, settings.api_port)
    except CliError as exc:
        raise exit_for(exc) from None
    with sock:
        if keyless:
            log.warning(
                "the API is open: no API key exists, so anyone who reaches it can read and "
                "change every job; create one with `jobq keys create`",
                host=settings.api_host,
            )
        if demo_jobs:
            run(lambda: _enqueue_and_close(jobq, demo_jobs))
        try:
            _serve_http(jobq, settings, sock, worker=jobq.worker() if development else None)
        except (JobqError, CliError) as exc:
            raise exit_for(exc) from None


async def _prepare_to_serve(
    jobq: JobQueue, settings: Settings, insecure_no_auth: bool, migrate: bool
) -> bool:
    """Prepare the database and decide whether the API may serve without keys: True if it
    will (no key exists). The connections belong to this short-lived event loop, so close
    them: the server opens its own in its loop."""
    try:
        await prepare(jobq, migrate=migrate)
        keys = await jobq.any_api_key()
    finally:
        await jobq.close()
    if keys:
        return False
    if not is_loopback(settings.api_host) and not insecure_no_auth:
        raise CliError(
            f"refusing to serve {settings.api_host} without API keys; create one with "
            "`jobq keys create --admin` (or pass --insecure-no-auth)"
        )
    return True


async def _enqueue_and_close(jobq: JobQueue, count: int) -> None:
    try:
        await enqueue_demo_jobs(jobq, count)
    finally:
        await jobq.close()


async def enqueue_demo_jobs(jobq: JobQueue, count: int) -> None:
    kinds = list(PLANS)
    jobs = await jobq.enqueue_many(
        [jobq.tasks[kinds[i % len(kinds)]].job(n=i) for i in range(count)]
    )
    typer.echo(f"enqueued {len(jobs)} demo jobs (ids {jobs[0].id}..{jobs[-1].id})")


def _serve_http(jobq: JobQueue, settings: Settings, sock: socket.socket, worker: Any) -> None:
    import uvicorn

    class _GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process dies
        of the signal; a jobq process that stopped cleanly on request exits 0 instead (a
        second signal still forces the exit, as uvicorn's handler does)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            settle_heap()  # the app, its lifespan (and under `serve`, the worker) are up

        def handle_exit(self, sig: int, frame: Any) -> None:
            # Open event streams would hold the graceful shutdown for its whole timeout:
            # end them now (clients get a timeout event and reconnect elsewhere).
            end_event_streams(api)
            super().handle_exit(sig, frame)

    from ..api import create_app
    from ..api.routes_events import end_event_streams

    api = create_app(jobq, worker=worker)
    config = uvicorn.Config(
        api,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # our JSON logging, set up already
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    server = _GracefulServer(config)
    where = f"http://{_url_host(settings.api_host)}:{sock.getsockname()[1]}"
    what = "API + worker, development: migrates on start" if worker is not None else "API"
    typer.echo(
        f"jobq listening on {where}  ({what}; dashboard: {where}/ui, docs: {where}/docs, "
        f"metrics: {where}/metrics)"
    )
    server.run(sockets=[sock])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
