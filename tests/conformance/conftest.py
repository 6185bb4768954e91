"""The conformance suite runs on SQLite, PostgreSQL, and PostgreSQL through PgBouncer in
transaction pooling mode (``JOBQ_POLL_ONLY=true``). Tests that need state kept in a server
session are marked ``session_state`` and skipped through the pooler, each saying why."""

from __future__ import annotations

import pytest

POOLED = "pgbouncer"


@pytest.fixture(params=["sqlite", "postgres", POOLED])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind, looked up by name so that the sqlite case does not
    need a PostgreSQL server, nor the postgres case a PgBouncer."""
    marker = request.node.get_closest_marker("session_state")
    if request.param == POOLED and marker is not None:
        pytest.skip(
            f"needs session state, which a transaction pooler does not keep: {marker.args[0]}"
        )
    name = {"sqlite": "sqlite_url", "postgres": "pg_url", POOLED: "pgbouncer_url"}[request.param]
    url: str = request.getfixturevalue(name)
    return url
