"""What every ``jobq`` command shares: which app and database it acts on, the migration
policy, confirmations, and how a failure becomes one line and an exit code.

Exit codes: 0 done; 1 a runtime failure (the database is unreachable or not migrated, a
job not found...); 2 a usage error (a bad option, APP, JSON argument, setting or database
URL): nothing was done, fix the command line or the configuration.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pydantic
import typer

from ..app import JobQueue
from ..config import Settings
from ..errors import (
    ConfigurationError,
    InvalidJobError,
    JobqError,
    TenantMismatchError,
    UnknownTaskError,
)
from ..storage.sqlite.driver import URL_PREFIX as SQLITE_PREFIX
from ..storage.sqlite.driver import database_path
from ..worker.simulated import register_demo_tasks

T = TypeVar("T")

APP_VARIABLE = "JOBQ_APP"
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Errors that mean the input (options, arguments, settings) was wrong, not the world.
USAGE_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    InvalidJobError,
    UnknownTaskError,
    TenantMismatchError,
    pydantic.ValidationError,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        "-d",
        envvar="JOBQ_DATABASE_URL",
        help="postgresql://... or sqlite:///file.db; overrides APP's own "
        "(default sqlite:///./jobq.db)",
        show_default=False,
    ),
]

AppSpec = Annotated[
    str | None,
    typer.Argument(
        metavar="[APP]",
        envvar=APP_VARIABLE,
        help="module:attribute of your JobQueue: its tasks and database (default: the demo kinds)",
        show_default=False,
    ),
]


class CliError(Exception):
    """A runtime failure to report as one line (exit code 1)."""


class UsageError(CliError):
    """A mistake in what was typed or configured (exit code 2)."""


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def usage(message: str) -> typer.Exit:
    return fail(message, EXIT_USAGE)


def exit_for(exc: BaseException) -> typer.Exit:
    """The one line and the exit code an expected failure ends a command with."""
    if isinstance(exc, pydantic.ValidationError):
        return usage(validation_message(exc))
    code = EXIT_USAGE if isinstance(exc, (UsageError, *USAGE_ERRORS)) else EXIT_FAILURE
    return fail(str(exc), code)


def validation_message(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "setting"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def settings_for(database_url: str | None, **overrides: Any) -> Settings:
    """The environment's settings with the command line's options over them."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url is not None:
        values["database_url"] = database_url
    try:
        return Settings(**values)
    except pydantic.ValidationError as exc:
        raise usage(validation_message(exc)) from None


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a new event loop (uvloop's where installed: see ``event_loops``);
    expected failures end the command as ``exit_for`` says."""
    try:
        with asyncio.Runner(loop_factory=event_loops()) as runner:
            return runner.run(_call(make))
    except (JobqError, CliError, pydantic.ValidationError) as exc:
        raise exit_for(exc) from None


def event_loops() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (with uvicorn[standard], on Linux and macOS),
    as the API's server picks it too: a worker's cost per job is mostly event-loop work
    (tasks, futures, socket reads), which uvloop does in C. None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


# ---------------------------------------------------------------- which app and database


@dataclass(frozen=True)
class Target:
    """What a command acts on: the JobQueue (APP's, or one with the demo kinds) over the
    database it resolved to, and this command's settings (environment and options)."""

    jobq: JobQueue
    settings: Settings


def resolve(
    app_spec: str | None, database_url: str | None, *, demo: bool = False, **overrides: Any
) -> Target:
    """The one rule for every command: APP (the argument, else JOBQ_APP) gives the tasks and
    the database; ``-d`` (or JOBQ_DATABASE_URL) overrides that database. ``demo``: the demo
    kinds whatever JOBQ_APP says (``jobq demo``). Usage errors end the command here."""
    settings = settings_for(database_url, **overrides)
    if app_spec is None and not demo:  # commands with a variadic APP argument read it here
        app_spec = os.environ.get(APP_VARIABLE) or None
    try:
        return Target(load_app(app_spec, settings, database_url), settings)
    except (JobqError, CliError) as exc:
        raise exit_for(exc) from None


def load_app(spec: str | None, settings: Settings, database_url: str | None = None) -> JobQueue:
    """``module:attribute`` naming a JobQueue, or the demo kinds when no spec is given. A
    database URL given on the command line (or JOBQ_DATABASE_URL) overrides the app's own."""
    if spec is None:
        jobq = JobQueue(settings=settings)
        register_demo_tasks(jobq)
        return jobq
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"APP must look like 'package.module:jobq', got {spec!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attribute):
        raise UsageError(f"{spec!r}: module {module_name!r} has no attribute {attribute!r}")
    found = getattr(module, attribute)
    if not isinstance(found, JobQueue):
        raise UsageError(
            f"{spec!r} is not a JobQueue but a {type(found).__name__} "
            "(name the JobQueue your tasks are registered on)"
        )
    if database_url is not None and database_url != found.settings.database_url:
        try:
            found.use_database(database_url)
        except ConfigurationError as exc:
            raise UsageError(f"{spec!r}: {exc}") from exc
    return found


def looks_like_json(text: str) -> bool:
    """Whether a positional argument is a JSON payload rather than a name."""
    if text.lstrip().startswith(("{", "[")):
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- the migration policy
#
# Only `jobq migrate` changes the schema, and it creates a missing SQLite file (never its
# directory: the driver refuses). Every other command acts on a database that is there and
# migrated, or stops with one line saying how to migrate; `serve` and `demo`, for
# development, migrate first and say so.


def shown_url(url: str) -> str:
    """The URL with any password masked, to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def migrate_hint(url: str) -> str:
    return f"run `jobq migrate -d {shown_url(url)}` first"


def require_database_file(jobq: JobQueue) -> None:
    """A SQLite database must exist before a command other than migrate opens it (opening
    would create an empty file)."""
    url = jobq.settings.database_url
    if not url.startswith(SQLITE_PREFIX):
        return
    path = database_path(url)
    if not path.parent.is_dir():  # a typo in the URL, most likely: migrate would refuse it too
        raise CliError(
            f"SQLite database {path}: directory {path.parent} does not exist; check the "
            "database URL (--database-url / JOBQ_DATABASE_URL): jobq creates the database "
            "file, not its directory"
        )
    if not path.exists():
        raise CliError(f"no jobq database at {path}: {migrate_hint(url)}")


async def require_schema(jobq: JobQueue) -> None:
    """Stop unless the database's schema is the one this jobq knows."""
    require_database_file(jobq)
    current, newest = await jobq.schema_versions()
    if current < newest:
        url = jobq.settings.database_url
        state = "has no jobq schema" if current == 0 else f"is at schema {current} of {newest}"
        raise CliError(f"the database {state}: {migrate_hint(url)}")


async def prepare(jobq: JobQueue, *, migrate: bool) -> None:
    """Before a command works on jobs: migrate (``serve`` and ``demo`` only, saying so), or
    check the schema."""
    if migrate:
        applied = await jobq.migrate()
        if applied:
            typer.echo(
                f"migrated {shown_url(jobq.settings.database_url)} "
                f"(applied {', '.join(f'{v:04d}' for v in applied)}); production "
                "commands never migrate: run `jobq migrate` there",
                err=True,
            )
    else:
        await require_schema(jobq)


def on_queue(target: Target, action: Callable[[JobQueue], Awaitable[T]]) -> T:
    """``action`` run on the target's JobQueue once its schema is checked, closed after;
    failures as ``run`` reports them."""

    async def work() -> T:
        try:
            await prepare(target.jobq, migrate=False)
            return await action(target.jobq)
        finally:
            await target.jobq.close()

    return run(work)


# ---------------------------------------------------------------- destructive commands

Yes = Annotated[
    bool, typer.Option("--yes", "-y", help="Do it without asking (needed when not on a terminal)")
]


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal before destroying data; without one, ``--yes`` is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise usage(f"{question}: refusing without a terminal to ask on; pass --yes")
    if not typer.confirm(f"{question}?", default=False, err=True):
        typer.echo("nothing done", err=True)
        raise typer.Exit(EXIT_FAILURE)
