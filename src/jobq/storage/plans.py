"""Statement plans: a piece of storage work written once and run by any driver, over an
asynchronous or a synchronous connection.

A plan is a generator: it yields each step and is sent back the step's rows, while a
driver's ``execute`` does the input and output with whichever kind of connection it holds.
The rules of the queue (``jobq.rules``) are plans, so the order of their statements and the
checks between them are the same on every database.

Parameters are plain Python values (lists for arrays, datetimes, None): each driver encodes
them as its database needs. A statement that needs the current time reads the database's
clock where there is one; drivers without a server clock supply ``now`` themselves, one
value for every statement of a plan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import MigrationError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Run:
    """One statement from the driver's queries file; the plan is sent its rows (a list: Jobs
    when ``jobs`` is true, else tuples; empty for a statement that returns nothing)."""

    query: str
    params: Any
    jobs: bool = False


@dataclass(frozen=True, slots=True)
class RunMany:
    """One statement executed once for each parameter row (no rows back)."""

    query: str
    rows: Sequence[Any]


@dataclass(frozen=True, slots=True)
class CopyIn:
    """``COPY ... FROM STDIN`` fed with ``chunks``. The chunks are pulled one at a time, each
    after the previous one was written, so the producer can do other work (build the Jobs it
    will return) while the server ingests."""

    query: str
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class Lock:
    """Serialise this plan's transaction with every other holding the same lock, until it
    ends: ``name`` is one of "migrations", "limits" or "tenant" (with the tenant's name as
    ``value``). A driver whose write transactions already exclude each other (SQLite) has
    nothing to do."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Script:
    """A migration script (several statements); ``label`` names it in a MigrationError."""

    sql: str
    label: str


Step = Run | RunMany | CopyIn | Lock | Script
Plan = Generator[Step, Any, T]


@contextlib.contextmanager
def failed_script_named(
    step: Step,
    errors: type[BaseException],
    unless: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Around a step's execution: a migration script failing with one of the driver's
    ``errors`` (``unless`` it is one of those, such as a lost connection) becomes a
    MigrationError that names its migration."""
    try:
        yield
    except errors as exc:
        if not isinstance(step, Script) or isinstance(exc, unless):
            raise
        raise MigrationError(f"{step.label} failed: {exc}") from exc


def drive(plan: Plan[T], execute: Callable[[Step], Any]) -> T:
    """Run a plan to its end over a synchronous connection (``execute`` runs one step)."""
    reply: Any = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply = execute(step)


async def drive_async(plan: Plan[T], execute: Callable[[Step], Awaitable[Any]]) -> T:
    """Run a plan to its end over an asynchronous connection."""
    reply: Any = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply = await execute(step)
