"""The ``jobq`` command line. Bad input: one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import pydantic
import structlog
import typer

from .access import ADMIN
from .app import JobQueue
from .config import Settings, is_loopback
from .errors import ConfigurationError, JobqError
from .keys import parse_duration, parse_scopes
from .model import ApiKey, WorkerInfo
from .observability.logging import configure_logging
from .observability.metrics import Metrics
from .observability.tracing import setup_from_environment as setup_tracing
from .process import settle_heap
from .storage.base import QueueStat
from .worker.simulated import PLANS, register_demo_tasks

T = TypeVar("T")
log = structlog.get_logger("jobq.cli")

app = typer.Typer(
    name="jobq",
    help="A durable job queue on PostgreSQL or SQLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        "-d",
        envvar="JOBQ_DATABASE_URL",
        help="postgresql://... or sqlite:///file.db (default sqlite:///./jobq.db)",
        show_default=False,
    ),
]


AppSpec = Annotated[
    str | None,
    typer.Argument(
        metavar="[APP]", help="module:attribute of your JobQueue (default: the demo kinds)"
    ),
]


class CliError(Exception):
    """A mistake in what was typed; shown as one line."""


def _settings(database_url: str | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url is not None:
        values["database_url"] = database_url
    try:
        return Settings(**values)
    except pydantic.ValidationError as exc:
        raise _invalid_setting(exc) from None


def _invalid_setting(exc: pydantic.ValidationError) -> typer.Exit:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "setting"
    message = str(first["msg"]).removeprefix("Value error, ")
    typer.echo(f"error: {where}: {message}", err=True)
    return typer.Exit(1)


def _setup_tracing() -> None:
    """OpenTelemetry from the OTEL_* variables (see observability/tracing.py); a bad value
    is one line and exit code 1, like a bad setting."""
    try:
        setup_tracing()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn expected failures into one line and exit code 1."""
    try:
        return asyncio.run(_call(make))
    except (JobqError, CliError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except pydantic.ValidationError as exc:
        raise _invalid_setting(exc) from None


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _on_queue(settings: Settings, action: Callable[[JobQueue], Awaitable[T]]) -> T:
    """``action`` run on a migrated JobQueue over the settings' database, closed after;
    failures as _run reports them."""

    async def work() -> T:
        jobq = JobQueue(settings=settings)
        try:
            await jobq.migrate()
            return await action(jobq)
        finally:
            await jobq.close()

    return _run(work)


def load_app(spec: str | None, settings: Settings, database_url: str | None = None) -> JobQueue:
    """``module:attribute`` naming a JobQueue, or the demo kinds when no spec is given. A
    database URL given on the command line (or JOBQ_DATABASE_URL) overrides the app's own."""
    if spec is None:
        jobq = JobQueue(settings=settings)
        register_demo_tasks(jobq)
        return jobq
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"APP must look like 'package.module:jobq', got {spec!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, JobQueue):
        raise CliError(f"{spec!r} is not a JobQueue")
    jobq = found
    if database_url is not None and database_url != jobq.settings.database_url:
        try:
            jobq.use_database(database_url)
        except ConfigurationError as exc:
            raise CliError(f"{spec!r}: {exc}") from exc
    return jobq


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Undo the newest migration(s) instead")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Undo every migration, then apply all again")
    ] = False,
    steps: Annotated[
        int | None, typer.Argument(help="With --rollback: how many to undo (default 1)")
    ] = None,
) -> None:
    """Bring the database schema up to date (or roll it back)."""
    if rollback and refresh:
        raise _usage("use --rollback or --refresh, not both")
    if steps is not None and not rollback:
        raise _usage("a step count goes with --rollback")
    if steps is not None and steps < 1:
        raise _usage("the step count must be at least 1")
    settings = _settings(database_url)

    async def work() -> None:
        jobq = JobQueue(settings=settings)
        try:
            if rollback:
                undone = await jobq.rollback(steps or 1)
                typer.echo(f"rolled back: {_versions(undone)}")
                return
            if refresh:
                applied_before = await jobq.applied_migrations()
                undone = await jobq.rollback(len(applied_before)) if applied_before else []
                typer.echo(f"rolled back: {_versions(undone)}")
            done = await jobq.migrate()
            typer.echo(f"applied: {_versions(done)}")
        finally:
            await jobq.close()

    _run(work)


def _versions(versions: list[int]) -> str:
    return ", ".join(f"{v:04d}" for v in versions) or "nothing"


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@app.command()
def worker(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-q",
            help="Comma-separated queues, by strict priority across them (a,b), or weighted "
            "for proportional claims (critical:6,default:3,low:1); default: all",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Jobs run at once")
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once no due job is left")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Serve Prometheus metrics on this port (JOBQ_API_HOST)"
        ),
    ] = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT (a second signal stops at once)."""
    early_signals = _remember_signals_until_started()
    settings = _settings(database_url, queues=queues, concurrency=concurrency)
    configure_logging(settings)
    _setup_tracing()
    metrics = Metrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.api_host, registry=metrics.registry)

    async def work() -> None:
        jobq = load_app(app_spec, settings, database_url)
        try:
            worker = jobq.worker(
                queues=settings.queue_weights or settings.queue_list,
                concurrency=settings.concurrency,
                burst=burst,
                metrics=metrics,
            )
            worker.install_signal_handlers(asyncio.get_running_loop(), early_signals)
            # A worker started while the database is down or restarting waits for it (and a
            # signal meanwhile stops it cleanly) instead of exiting 1 on the migration.
            if await worker.until_database_answers(jobq.migrate, "migration"):
                settle_heap()
                await worker.run()
        finally:
            await jobq.close()

    _run(work)


def _remember_signals_until_started() -> list[signal.Signals]:
    """Until the worker installs its own handlers, SIGTERM/SIGINT are noted, not fatal: an
    orchestrator may stop a worker that is still loading the app or migrating, and that
    should end as a clean stop (exit 0, nothing claimed), not as death by signal."""
    received: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signal.Signals(signum)))
    return received


Host = Annotated[str | None, typer.Option("--host", help="Listen address (JOBQ_API_HOST)")]
Port = Annotated[int | None, typer.Option("--port", help="Listen port (JOBQ_API_PORT)")]
InsecureNoAuth = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="Serve a non-loopback address without API keys: anyone who reaches it can "
        "read and change every job",
    ),
]


def _serve_http(jobq: JobQueue, settings: Settings, worker: Any = None) -> None:
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

    from .api import create_app
    from .api.routes_events import end_event_streams

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
    where = f"http://{settings.api_host}:{settings.api_port}"
    typer.echo(f"jobq listening on {where}  (docs: {where}/docs, metrics: {where}/metrics)")
    server.run()


@app.command()
def serve(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    host: Host = None,
    port: Port = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Jobs run at once")
    ] = None,
    insecure_no_auth: InsecureNoAuth = False,
) -> None:
    """API + worker in one process (the demo kinds unless APP is given)."""
    settings = _settings(database_url, api_host=host, api_port=port, concurrency=concurrency)
    configure_logging(settings)
    _setup_tracing()
    jobq = load_app(app_spec, settings, database_url)
    _run(lambda: _prepare_to_serve(jobq, settings, insecure_no_auth))
    _serve_guarded(lambda: _serve_http(jobq, settings, worker=jobq.worker()))


@app.command()
def api(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    host: Host = None,
    port: Port = None,
    insecure_no_auth: InsecureNoAuth = False,
) -> None:
    """The HTTP API alone (run workers with `jobq worker`)."""
    settings = _settings(database_url, api_host=host, api_port=port)
    configure_logging(settings)
    _setup_tracing()
    jobq = load_app(app_spec, settings, database_url)
    _run(lambda: _prepare_to_serve(jobq, settings, insecure_no_auth))
    _serve_guarded(lambda: _serve_http(jobq, settings))


async def _prepare_to_serve(jobq: JobQueue, settings: Settings, insecure_no_auth: bool) -> None:
    """Migrate before serving, and decide whether the API may serve without keys. The
    connections belong to this short-lived event loop, so close them: the server opens its
    own in its loop."""
    try:
        await jobq.migrate()
        keys = await jobq.any_api_key()
    finally:
        await jobq.close()
    if keys:
        return
    if not is_loopback(settings.api_host) and not insecure_no_auth:
        raise CliError(
            f"refusing to serve {settings.api_host} without API keys; create one with "
            "`jobq keys create --admin` (or pass --insecure-no-auth)"
        )
    log.warning(
        "the API is open: no API key exists, so anyone who reaches it can read and change "
        "every job; create one with `jobq keys create`",
        host=settings.api_host,
    )


def _serve_guarded(start: Callable[[], None]) -> None:
    try:
        start()
    except (JobqError, CliError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def enqueue(
    kind: Annotated[str, typer.Argument(help="The task name, e.g. send_email")],
    database_url: DatabaseUrl = None,
    payload: Annotated[str, typer.Option("--payload", "-p", help="A JSON object")] = "{}",
    queue: Annotated[str | None, typer.Option("--queue", help="Default: the task's")] = None,
    delay: Annotated[float | None, typer.Option("--delay", help="Seconds from now")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="-1000..1000")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    unique_key: Annotated[
        str | None,
        typer.Option("--unique-key", help="Reuse the active job holding this key, if any"),
    ] = None,
    depends_on: Annotated[
        str | None,
        typer.Option("--depends-on", help="Comma-separated ids of jobs to wait for"),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Who the job is for")] = None,
) -> None:
    """Enqueue one job and print it as JSON."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _usage(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _usage('--payload must be a JSON object, like \'{"to": "a@b.c"}\'')
    try:
        parents = [int(p) for p in depends_on.split(",") if p.strip()] if depends_on else []
    except ValueError:
        raise _usage("--depends-on takes job ids separated by commas, like 12,13") from None
    settings = _settings(database_url)
    _setup_tracing()

    async def work() -> None:
        jobq = load_app(None, settings)
        try:
            await jobq.migrate()
            job = await jobq.enqueue(
                kind,
                body,
                queue=queue,
                delay=delay,
                priority=priority,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
                unique_key=unique_key,
                depends_on=parents,
                tenant=tenant,
            )
            typer.echo(json.dumps(_job_summary(job)))
        finally:
            await jobq.close()

    _run(work)


def _job_summary(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "status": str(job.status),
        "priority": job.priority,
        "run_at": job.run_at.isoformat(),
        "max_attempts": job.max_attempts,
    }


@app.command()
def status(database_url: DatabaseUrl = None) -> None:
    """Job counts by queue and status, and the registered workers."""
    settings = _settings(database_url)

    async def read(jobq: JobQueue) -> tuple[list[QueueStat], list[WorkerInfo]]:
        return await jobq.stats(), await jobq.workers()

    stats, workers = _on_queue(settings, read)
    if not stats:
        typer.echo("no jobs")
    else:
        typer.echo(f"{'QUEUE':<20} {'STATUS':<10} {'COUNT':>10}")
        for s in stats:
            typer.echo(f"{s.queue:<20} {s.status:<10} {s.count:>10}")
    typer.echo(f"workers: {len(workers)}")
    for w in workers:
        typer.echo(
            f"  {w.id}  queues={','.join(w.queues) or 'all'}  concurrency={w.concurrency}"
            f"  heartbeat={w.heartbeat_at.isoformat()}"
        )


@app.command()
def schedules(app_spec: AppSpec = None) -> None:
    """The periodic schedules of APP and the next tick of each (UTC)."""
    settings = _settings(None)
    try:
        jobq = load_app(app_spec, settings)
    except (JobqError, CliError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not jobq.schedules:
        typer.echo("no schedules")
        return
    now = datetime.now(UTC)
    typer.echo(f"{'NAME':<24} {'CRON':<20} {'TASK':<24} NEXT TICK (UTC)")
    for s in jobq.schedules:
        cron = s.cron if s.tz is UTC else f"{s.cron} ({s.tz})"
        typer.echo(f"{s.name:<24} {cron:<20} {s.task:<24} {s.next_tick(now).isoformat()}")


@app.command()
def demo(
    database_url: DatabaseUrl = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=100_000)] = 20,
) -> None:
    """Enqueue COUNT jobs of the demo kinds (send_email, resize_image, ...)."""
    settings = _settings(database_url)
    _setup_tracing()

    async def work() -> None:
        jobq = load_app(None, settings)
        try:
            await jobq.migrate()
            kinds = list(PLANS)
            jobs = await jobq.enqueue_many(
                [jobq.tasks[kinds[i % len(kinds)]].job(n=i) for i in range(count)]
            )
            typer.echo(f"enqueued {len(jobs)} demo jobs (ids {jobs[0].id}..{jobs[-1].id})")
        finally:
            await jobq.close()

    _run(work)


@app.command()
def bench(
    database_url: DatabaseUrl = None,
    jobs: Annotated[int, typer.Option("--jobs", "-n", min=10, help="Jobs per case")] = 20_000,
    cases: Annotated[
        str,
        typer.Option(
            "--cases",
            help="Comma-separated: enqueue,drain,e2e,latency,http,scale,steady,executors,hosts "
            "(hosts: worker and API processes in network namespaces on a throwaway primary; "
            "root only)",
        ),
    ] = "enqueue,drain,e2e,latency,http",
    samples: Annotated[int, typer.Option("--samples", min=5, help="Latency samples")] = 60,
    scale_jobs: Annotated[
        int, typer.Option("--scale-jobs", min=100, help="Backlog for the scale case")
    ] = 1_000_000,
    steady_jobs: Annotated[
        int, typer.Option("--steady-jobs", min=100, help="Jobs through the long-running case")
    ] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Rounds of the hosts case (median, min-max)")
    ] = 3,
) -> None:
    """Measure throughput and latency, each case on a fresh database and checked afterwards.

    On PostgreSQL the URL's server must allow CREATE DATABASE (a database per case)."""
    from .bench.runner import ALL_CASES, render_table, run_cases
    from .bench.runner import as_json as to_json

    chosen = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(ALL_CASES))
    if unknown:
        raise _usage(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(ALL_CASES)}")
    settings = _settings(database_url)
    results = _run(
        lambda: run_cases(
            settings.database_url, jobs, chosen, samples, scale_jobs, steady_jobs, rounds
        )
    )
    async_claims = settings.claim_async_commit
    typer.echo(
        to_json(settings.database_url, results, claim_async_commit=async_claims)
        if as_json
        else render_table(results, claim_async_commit=async_claims)
    )


queues_app = typer.Typer(help="Pause and resume queues.", no_args_is_help=True)
app.add_typer(queues_app, name="queues")
QueueArg = Annotated[str, typer.Argument(help="The queue's name")]


def _set_paused(queue: str, paused: bool, database_url: str | None) -> None:
    settings = _settings(database_url)

    async def act(jobq: JobQueue) -> bool:
        if paused:
            return await jobq.pause_queue(queue)
        return await jobq.resume_queue(queue)

    changed = _on_queue(settings, act)
    state = "paused" if paused else "resumed"
    typer.echo(f"{queue}: {state}" if changed else f"{queue}: already {state}")


@queues_app.command("pause")
def pause(queue: QueueArg, database_url: DatabaseUrl = None) -> None:
    """Stop workers claiming jobs of QUEUE (running ones finish) until it is resumed."""
    _set_paused(queue, True, database_url)


@queues_app.command("resume")
def resume(queue: QueueArg, database_url: DatabaseUrl = None) -> None:
    """Let workers claim jobs of QUEUE again."""
    _set_paused(queue, False, database_url)


keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    database_url: DatabaseUrl = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant this key acts for")
    ] = None,
    scopes: Annotated[
        str | None,
        typer.Option("--scopes", help="Comma-separated: jobs:read, jobs:write, jobs:manage"),
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="A key for every tenant, with every scope")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="What the key is for")] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="e.g. 90d, 12h (default: never)")
    ] = None,
) -> None:
    """Create a key and print it: the only time it is shown (only its hash is kept)."""
    if admin == (tenant is not None):
        raise _usage("give either --tenant (with --scopes) or --admin")
    try:
        granted = (ADMIN,) if admin else parse_scopes(scopes or "")
        lifetime = parse_duration(expires_in) if expires_in else None
    except JobqError as exc:
        raise _usage(str(exc)) from None
    settings = _settings(database_url)
    configure_logging(settings)

    async def create(jobq: JobQueue) -> tuple[ApiKey, str]:
        return await jobq.create_api_key(
            tenant=tenant, scopes=granted, name=name, expires_in=lifetime
        )

    key, secret = _on_queue(settings, create)
    log.info("admin action", action="key_create", key_id=key.id, tenant=tenant)
    typer.echo(secret)
    typer.echo(
        f"key {key.id} for {_whose(key.tenant)}, scopes {','.join(key.scopes)}: "
        "store it now, it cannot be shown again",
        err=True,
    )


def _whose(tenant: str | None) -> str:
    return "every tenant" if tenant is None else f"tenant {tenant}"


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """Every key, without secrets."""
    settings = _settings(database_url)
    configure_logging(settings)

    keys = _on_queue(settings, JobQueue.api_keys)
    if not keys:
        typer.echo("no keys")
        return
    typer.echo(
        f"{'ID':<16}  {'NAME':<12} {'TENANT':<12} {'SCOPES':<34} {'STATE':<8} "
        "CREATED / EXPIRES / LAST USED"
    )
    now = datetime.now(UTC)
    for k in keys:
        state = (
            "revoked"
            if k.revoked_at
            else "expired"
            if k.expires_at and k.expires_at <= now
            else "active"
        )
        times = " / ".join(_when(t) for t in (k.created_at, k.expires_at, k.last_used_at))
        typer.echo(
            f"{k.id:<16}  {k.name or '-':<12} {k.tenant or '*':<12} "
            f"{','.join(k.scopes):<34} {state:<8} {times}"
        )


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see jobq keys list)")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: API processes refuse it within JOBQ_AUTH_CACHE_S."""
    settings = _settings(database_url)
    configure_logging(settings)

    async def revoke(jobq: JobQueue) -> None:
        if not await jobq.revoke_api_key(key_id):
            raise CliError(f"no active key with id {key_id!r}")

    _on_queue(settings, revoke)
    log.info("admin action", action="key_revoke", key_id=key_id)
    typer.echo(f"revoked {key_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
