"""Storage drivers. ``connect(url)`` picks one by the URL's scheme."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigurationError
from .base import Driver


def connect(url: str, settings: Settings | None = None) -> Driver:
    """A driver for ``url`` (not yet opened: call ``await driver.open()`` or use it, it opens
    itself on first use)."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres.driver import PostgresDriver

        return PostgresDriver(url, settings)
    if url.startswith("sqlite://"):
        from .sqlite.driver import SqliteDriver

        return SqliteDriver(url, settings)
    raise ConfigurationError(
        f"unsupported database URL {url!r}: use postgresql://... or sqlite:///path/to/file.db"
    )
