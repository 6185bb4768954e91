"""A process's first connection to PostgreSQL, made alone before the pool opens.

The pool retries a failed connection in the background, logging each try, and its callers
see only "no connection free" once their wait is over. A first connection made directly
fails at once with libpq's own reason, which this module turns into one line: a server that
refuses this URL (no such database or role, authentication failed) is a ConfigurationError,
since waiting will not fix it; a server that cannot be reached is a DatabaseUnavailableError.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psycopg

from ...errors import ConfigurationError, DatabaseUnavailableError, JobqError

# libpq's words when the server answered and refused this URL's database or credentials.
_REFUSED_BY_SERVER = (
    "does not exist",  # database "x" / role "x"
    "authentication failed",
    "no pg_hba.conf entry",
    "password is required",
    "permission denied",
)


def _described(exc: psycopg.OperationalError) -> tuple[str, str]:
    """Where libpq tried (``"127.0.0.1", port 5432``) and why it failed, from its message:
    ``connection failed: connection to server at "h", port p failed: FATAL:  reason`` and
    an optional hint on the next line."""
    first, _, hint = str(exc).strip().partition("\n")
    where, sep, reason = first.rpartition(" failed: ")
    if not sep:
        return "", first.removeprefix("connection failed: ")
    where = where.split("connection to server ", 1)[-1].removeprefix("at ")
    reason = reason.removeprefix("FATAL:").strip()
    hint = hint.strip().splitlines()[0] if hint.strip() else ""
    return where, f"{reason} ({hint[:1].lower()}{hint[1:]})" if hint else reason


def connect_failure(exc: psycopg.OperationalError) -> JobqError:
    """The jobq error a failed connection attempt means, in one line."""
    where, reason = _described(exc)
    at = f" at {where}" if where else ""
    if any(words in reason for words in _REFUSED_BY_SERVER):
        return ConfigurationError(
            f"PostgreSQL{at} refused the connection: {reason}; check the database URL "
            "(--database-url / JOBQ_DATABASE_URL)"
        )
    return DatabaseUnavailableError(f"cannot connect to PostgreSQL{at}: {reason}")


def _timed_out(timeout_s: float) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"cannot connect to PostgreSQL: no answer within {timeout_s:g} s (JOBQ_POOL_TIMEOUT_S)"
    )


async def check_first_connection(url: str, kwargs: dict[str, Any], timeout_s: float) -> None:
    """Connect once and close; raise what a failure means (see connect_failure)."""
    try:
        async with asyncio.timeout(timeout_s):
            conn = await psycopg.AsyncConnection.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise connect_failure(exc) from exc
    except TimeoutError:
        raise _timed_out(timeout_s) from None
    await conn.close()


def check_first_connection_sync(url: str, kwargs: dict[str, Any], timeout_s: float) -> None:
    """``check_first_connection`` for the synchronous pool."""
    try:
        conn = psycopg.connect(url, **{"connect_timeout": max(1, math.ceil(timeout_s)), **kwargs})
    except psycopg.OperationalError as exc:
        if "timeout expired" in str(exc):
            raise _timed_out(timeout_s) from exc
        raise connect_failure(exc) from exc
    conn.close()
