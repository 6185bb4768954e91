"""Loading SQL kept in files: named queries and numbered migrations, per dialect."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from ..errors import MigrationError

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")


def load_queries(dialect: str) -> dict[str, str]:
    """Parse ``storage/<dialect>/queries.sql`` into {name: sql}; each query follows a
    ``-- name: some_name`` line and runs to the next one."""
    text = resources.files(f"jobq.storage.{dialect}").joinpath("queries.sql").read_text("utf-8")
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in the {dialect} queries.sql")
        queries[name] = body.strip().rstrip(";")
    return queries


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode("utf-8")).hexdigest()


def load_migrations(dialect: str) -> list[Migration]:
    """Every migration of a dialect, oldest first. Each version needs an .up and a .down."""
    folder = resources.files(f"jobq.storage.{dialect}").joinpath("migrations")
    found: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        names[version] = match.group(2)
        found.setdefault(version, {})[match.group(3)] = entry.read_text("utf-8")
    migrations = []
    for version in sorted(found):
        sides = found[version]
        if set(sides) != {"up", "down"}:
            raise MigrationError(f"{dialect} migration {version:04d} needs both .up and .down")
        migrations.append(Migration(version, names[version], sides["up"], sides["down"]))
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise MigrationError(f"{dialect} migrations must be numbered 0001, 0002, ... without gaps")
    return migrations


def pending_migrations(dialect: str, applied: dict[int, str]) -> list[Migration]:
    """The migrations still to apply, oldest first, given {version: checksum} already applied.
    Refuses a database whose applied migrations were edited since, or that is newer than
    this code."""
    known = load_migrations(dialect)
    for migration in known:
        if migration.version in applied and applied[migration.version] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} was changed after it "
                "was applied (checksum mismatch); add a new migration instead"
            )
    newest_known = known[-1].version if known else 0
    if applied and max(applied) > newest_known:
        raise MigrationError(
            f"the database is at schema version {max(applied)}, newer than this jobq knows "
            f"({newest_known}); upgrade jobq"
        )
    return [m for m in known if m.version not in applied]
