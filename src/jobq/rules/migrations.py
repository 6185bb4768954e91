"""The migration runner: which migrations to apply or undo, in what order, under one lock.

Every plan here runs in one transaction that first takes the "migrations" lock, so
processes that start at the same moment apply each migration once, in order, or not at all
(both databases' DDL is transactional).
"""

from __future__ import annotations

from ..errors import MigrationError
from ..storage.plans import Lock, Plan, Run, Script
from ..storage.sqlfiles import Migration, load_migrations, pending_migrations


def _label(doing: str, migration: Migration) -> str:
    return f"{doing} migration {migration.version:04d}_{migration.name}"


def _applied_under_lock() -> Plan[dict[int, str]]:
    yield Lock("migrations")
    yield Run("create_migrations_table", {})
    rows = yield Run("applied_migrations", {})
    return {int(version): str(checksum) for version, checksum in rows}


def migrate(dialect: str) -> Plan[list[int]]:
    """Apply the pending migrations; the versions applied."""
    applied = yield from _applied_under_lock()
    done = []
    for migration in pending_migrations(dialect, applied):
        yield Script(migration.up_sql, _label("applying", migration))
        yield Run(
            "record_migration",
            {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
        )
        done.append(migration.version)
    return done


def rollback(dialect: str, steps: int) -> Plan[list[int]]:
    """Undo the newest ``steps`` migrations; the versions undone."""
    if steps < 1:
        raise MigrationError("rollback needs at least one step")
    applied = yield from _applied_under_lock()
    newest_first = sorted(
        (m for m in load_migrations(dialect) if m.version in applied),
        key=lambda m: m.version,
        reverse=True,
    )
    done = []
    for migration in newest_first[:steps]:
        yield Script(migration.down_sql, _label("rolling back", migration))
        yield Run("forget_migration", {"version": migration.version})
        done.append(migration.version)
    return done


def applied_migrations() -> Plan[list[int]]:
    """The versions applied, read without the lock: readiness probes ask this, and must not
    queue behind busy writers. One SELECT sees one committed state, all the answer needs."""
    [(exists,)] = yield Run("migrations_table_exists", {})
    if not exists:
        return []
    rows = yield Run("applied_migrations", {})
    return sorted(int(version) for version, _ in rows)
