"""The ``jobq`` command line. Bad input: one clear line on stderr and exit code 2; a
runtime failure: one line and exit code 1 (see common.py)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
import typer

from ..access import ADMIN
from ..app import JobQueue
from ..errors import ConfigurationError, JobqError
from ..keys import parse_duration, parse_scopes
from ..model import ApiKey, WorkerInfo
from ..observability.logging import configure_logging
from ..observability.metrics import Metrics
from ..observability.tracing import setup_from_environment as setup_tracing
from ..periodic import Schedule
from ..process import settle_heap
from ..storage.base import QueueStat
from ..worker.simulated import PLANS
from .common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    AppSpec,
    CliError,
    DatabaseUrl,
    Yes,
    confirm,
    exit_for,
    looks_like_json,
    on_queue,
    prepare,
    require_schema,
    resolve,
    run,
    settings_for,
    shown_url,
    usage,
)
from .serving import Host, InsecureNoAuth, Port, enqueue_demo_jobs, serve_command

log = structlog.get_logger("jobq.cli")

app = typer.Typer(
    name="jobq",
    help="A durable job queue on PostgreSQL or SQLite.\n\n"
    "Commands that work on jobs act on APP's tasks and database (APP: module:attribute of "
    "your JobQueue, or JOBQ_APP; -d overrides the database). Only `jobq migrate` changes "
    "the schema; `serve` and `demo`, for development, migrate first.\n\n"
    f"Exit codes: 0 done, {EXIT_FAILURE} a runtime failure (database unreachable or not "
    f"migrated, port in use...), {EXIT_USAGE} a usage error (bad option, APP, JSON, setting "
    "or database URL; nothing was done).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_tracing() -> None:
    """OpenTelemetry from the OTEL_* variables (see observability/tracing.py); a bad value
    is one line and a usage error, like a bad setting."""
    try:
        setup_tracing()
    except ConfigurationError as exc:
        raise exit_for(exc) from None


@app.command()
def migrate(
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[APP] [N]",
            help="APP (module:attribute, or JOBQ_APP): migrate its database; N, with "
            "--rollback: how many migrations to undo (default 1)",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Undo the newest migration(s) instead")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Undo every migration, then apply all again")
    ] = False,
    yes: Yes = False,
) -> None:
    """Bring the database schema up to date (or roll it back). Creates a missing SQLite
    file, never its directory. The only command that changes the schema."""
    app_spec, steps = _migrate_arguments(arguments or [])
    if rollback and refresh:
        raise usage("use --rollback or --refresh, not both")
    if steps is not None and not rollback:
        raise usage("a step count goes with --rollback")
    if steps is not None and steps < 1:
        raise usage("the step count must be at least 1")
    target = resolve(app_spec, database_url)
    jobq = target.jobq
    where = shown_url(jobq.settings.database_url)
    if rollback:
        confirm(f"roll back {steps or 1} migration(s) of {where}, dropping what they made", yes)
    if refresh:
        confirm(f"drop every jobq table of {where}, with all its jobs, and migrate again", yes)

    async def work() -> None:
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

    run(work)


def _migrate_arguments(values: list[str]) -> tuple[str | None, int | None]:
    """APP and N, in either order: N is the one that is a number."""
    numbers = [v for v in values if v.strip().lstrip("+-").isdigit()]
    names = [v for v in values if v not in numbers]
    if len(numbers) > 1 or len(names) > 1:
        raise usage("migrate takes [APP] [N]")
    return (names[0] if names else None), (int(numbers[0]) if numbers else None)


def _versions(versions: list[int]) -> str:
    return ", ".join(f"{v:04d}" for v in versions) or "nothing"


Concurrency = Annotated[
    int | None,
    typer.Option("--concurrency", "-c", envvar="JOBQ_CONCURRENCY", min=1, help="Jobs run at once"),
]


@app.command()
def worker(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-q",
            envvar="JOBQ_QUEUES",
            help="Comma-separated queues, by strict priority across them (a,b), or weighted "
            "for proportional claims (critical:6,default:3,low:1); default: all",
        ),
    ] = None,
    concurrency: Concurrency = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once no due job is left")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="JOBQ_METRICS_PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port, on the address JOBQ_API_HOST names",
        ),
    ] = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT (a second signal stops at once)."""
    early_signals = _remember_signals_until_started()
    target = resolve(app_spec, database_url, queues=queues, concurrency=concurrency)
    settings, jobq = target.settings, target.jobq
    configure_logging(settings)
    _setup_tracing()
    metrics = Metrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr=settings.api_host, registry=metrics.registry)
        except OSError as exc:
            raise exit_for(
                CliError(
                    f"cannot serve metrics on {settings.api_host}:{metrics_port}: "
                    f"{exc.strerror} (--metrics-port, JOBQ_METRICS_PORT)"
                )
            ) from None

    async def work() -> None:
        try:
            worker = jobq.worker(
                queues=settings.queue_weights or settings.queue_list,
                concurrency=settings.concurrency,
                burst=burst,
                metrics=metrics,
            )
            worker.install_signal_handlers(asyncio.get_running_loop(), early_signals)
            # A worker started while the database is down or restarting waits for it (and a
            # signal meanwhile stops it cleanly); an unmigrated database stops it at once.
            if await worker.until_database_answers(lambda: require_schema(jobq), "schema check"):
                settle_heap()
                await worker.run()
        finally:
            await jobq.close()

    run(work)


def _remember_signals_until_started() -> list[signal.Signals]:
    """Until the worker installs its own handlers, SIGTERM/SIGINT are noted, not fatal: an
    orchestrator may stop a worker that is still loading the app or migrating, and that
    should end as a clean stop (exit 0, nothing claimed), not as death by signal."""
    received: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signal.Signals(signum)))
    return received


@app.command()
def serve(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    host: Host = None,
    port: Port = None,
    concurrency: Concurrency = None,
    demo_jobs: Annotated[
        int,
        typer.Option(
            "--demo-jobs",
            min=0,
            max=100_000,
            help="Enqueue this many demo jobs once the port is bound (with the demo kinds)",
        ),
    ] = 0,
    insecure_no_auth: InsecureNoAuth = False,
) -> None:
    """For development: API + worker in one process (the demo kinds unless APP is given).
    Migrates the database first; in production run `jobq migrate`, then `jobq api` and
    `jobq worker`."""
    target = resolve(app_spec, database_url, api_host=host, api_port=port, concurrency=concurrency)
    if demo_jobs and not set(PLANS) <= target.jobq.tasks.keys():
        raise usage("--demo-jobs needs the demo kinds: leave APP out")
    configure_logging(target.settings)
    _setup_tracing()
    serve_command(
        target.jobq,
        target.settings,
        insecure_no_auth=insecure_no_auth,
        development=True,
        demo_jobs=demo_jobs,
    )


@app.command()
def api(
    app_spec: AppSpec = None,
    database_url: DatabaseUrl = None,
    host: Host = None,
    port: Port = None,
    insecure_no_auth: InsecureNoAuth = False,
) -> None:
    """The HTTP API alone (run workers with `jobq worker`), on a migrated database."""
    target = resolve(app_spec, database_url, api_host=host, api_port=port)
    configure_logging(target.settings)
    _setup_tracing()
    serve_command(
        target.jobq, target.settings, insecure_no_auth=insecure_no_auth, development=False
    )


@app.command()
def enqueue(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="[APP] KIND [PAYLOAD]",
            help="APP (module:attribute, or JOBQ_APP) supplies the task's queue, attempts and "
            "database; KIND is the task name, e.g. send_email; PAYLOAD a JSON object",
            show_default=False,
        ),
    ],
    database_url: DatabaseUrl = None,
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", help="A JSON object (or give PAYLOAD)")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Default: the task's")] = None,
    delay: Annotated[float | None, typer.Option("--delay", help="Seconds from now")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="-1000..1000")] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="Default: the task's")
    ] = None,
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
    app_spec, kind, given = _enqueue_arguments(arguments)
    if given is not None and payload is not None:
        raise usage("give the payload once: as PAYLOAD or with --payload")
    text = given if given is not None else payload if payload is not None else "{}"
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise usage(f"the payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise usage('the payload must be a JSON object, like \'{"to": "a@b.c"}\'')
    try:
        parents = [int(p) for p in depends_on.split(",") if p.strip()] if depends_on else []
    except ValueError:
        raise usage("--depends-on takes job ids separated by commas, like 12,13") from None
    target = resolve(app_spec, database_url)
    _setup_tracing()

    async def act(jobq: JobQueue) -> dict[str, Any]:
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
        return _job_summary(job)

    typer.echo(json.dumps(on_queue(target, act)))


def _enqueue_arguments(values: list[str]) -> tuple[str | None, str, str | None]:
    """APP, KIND and PAYLOAD from 1 to 3 arguments: with two, the second is the payload
    when it is JSON, else the two are APP and KIND."""
    if len(values) == 1:
        return None, values[0], None
    if len(values) == 2:
        if looks_like_json(values[1]):
            return None, values[0], values[1]
        return values[0], values[1], None
    if len(values) == 3:
        return values[0], values[1], values[2]
    raise usage("enqueue takes [APP] KIND [PAYLOAD]")


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
def status(app_spec: AppSpec = None, database_url: DatabaseUrl = None) -> None:
    """Job counts by queue and status, and the registered workers."""
    target = resolve(app_spec, database_url)

    async def read(jobq: JobQueue) -> tuple[list[QueueStat], list[WorkerInfo]]:
        return await jobq.stats(), await jobq.workers()

    stats, workers = on_queue(target, read)
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
def schedules(app_spec: AppSpec = None, database_url: DatabaseUrl = None) -> None:
    """The periodic schedules of APP and the next tick of each, in its time zone. Reads
    APP only: the database (-d) is resolved and checked like every command's, not opened."""
    target = resolve(app_spec, database_url)
    if not target.jobq.schedules:
        typer.echo("no schedules")
        return
    now = datetime.now(UTC)
    for line in schedule_table(target.jobq.schedules, now):
        typer.echo(line)


def schedule_table(schedules: list[Schedule], now: datetime) -> list[str]:
    """Columns as wide as their widest cell; each next tick in its schedule's zone."""
    header = ("NAME", "CRON", "TZ", "TASK", "NEXT TICK")
    rows = [
        (
            s.name,
            s.cron,
            str(s.tz),
            s.task,
            s.next_tick(now).astimezone(s.tz).isoformat(),
        )
        for s in schedules
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in [header, *rows]
    ]


@app.command()
def demo(
    database_url: DatabaseUrl = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=100_000)] = 20,
) -> None:
    """For development: enqueue COUNT jobs of the demo kinds (send_email, resize_image, ...),
    migrating the database first."""
    target = resolve(None, database_url, demo=True)
    _setup_tracing()

    async def work() -> None:
        try:
            await prepare(target.jobq, migrate=True)
            await enqueue_demo_jobs(target.jobq, count)
        finally:
            await target.jobq.close()

    run(work)


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
    from ..bench.runner import ALL_CASES, render_table, run_cases
    from ..bench.runner import as_json as to_json

    chosen = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(ALL_CASES))
    if unknown:
        raise usage(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(ALL_CASES)}")
    settings = settings_for(database_url)
    results = run(
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
QueueArgs = Annotated[
    list[str],
    typer.Argument(
        metavar="[APP] QUEUE",
        help="APP (module:attribute, or JOBQ_APP) gives the database; QUEUE the queue's name",
        show_default=False,
    ),
]


def _set_paused(arguments: list[str], paused: bool, database_url: str | None) -> None:
    if len(arguments) not in (1, 2):
        raise usage("give [APP] QUEUE")
    app_spec, queue = (None, arguments[0]) if len(arguments) == 1 else arguments
    target = resolve(app_spec, database_url)

    async def act(jobq: JobQueue) -> bool:
        if paused:
            return await jobq.pause_queue(queue)
        return await jobq.resume_queue(queue)

    changed = on_queue(target, act)
    state = "paused" if paused else "resumed"
    typer.echo(f"{queue}: {state}" if changed else f"{queue}: already {state}")


@queues_app.command("pause")
def pause(arguments: QueueArgs, database_url: DatabaseUrl = None) -> None:
    """Stop workers claiming jobs of QUEUE (running ones finish) until it is resumed."""
    _set_paused(arguments, True, database_url)


@queues_app.command("resume")
def resume(arguments: QueueArgs, database_url: DatabaseUrl = None) -> None:
    """Let workers claim jobs of QUEUE again."""
    _set_paused(arguments, False, database_url)


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
        raise usage("give either --tenant (with --scopes) or --admin")
    try:
        granted = (ADMIN,) if admin else parse_scopes(scopes or "")
        lifetime = parse_duration(expires_in) if expires_in else None
    except JobqError as exc:
        raise usage(str(exc)) from None
    target = resolve(None, database_url)
    configure_logging(target.settings)

    async def create(jobq: JobQueue) -> tuple[ApiKey, str]:
        return await jobq.create_api_key(
            tenant=tenant, scopes=granted, name=name, expires_in=lifetime
        )

    key, secret = on_queue(target, create)
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
    target = resolve(None, database_url)
    configure_logging(target.settings)

    keys = on_queue(target, JobQueue.api_keys)
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
    target = resolve(None, database_url)
    configure_logging(target.settings)

    async def revoke(jobq: JobQueue) -> None:
        if not await jobq.revoke_api_key(key_id):
            raise CliError(f"no active key with id {key_id!r}")

    on_queue(target, revoke)
    log.info("admin action", action="key_revoke", key_id=key_id)
    typer.echo(f"revoked {key_id}")


def main() -> None:
    app()
