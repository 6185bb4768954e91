"""The conformance suite runs on SQLite, PostgreSQL, and PostgreSQL through PgBouncer in
transaction pooling mode (``JOBQ_POLL_ONLY=true``): none of its tests needs state kept in a
server session (what jobq would need is listed in docs/scaling.md#pgbouncer)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres", "pgbouncer"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind, looked up by name so that the sqlite case does not
    need a PostgreSQL server, nor the postgres case a PgBouncer."""
    name = {"sqlite": "sqlite_url", "postgres": "pg_url", "pgbouncer": "pgbouncer_url"}
    url: str = request.getfixturevalue(name[request.param])
    return url
