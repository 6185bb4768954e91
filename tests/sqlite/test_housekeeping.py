"""Housekeeping on SQLite: nothing for the leader to vacuum."""

from __future__ import annotations

from jobq.storage import connect

from ..conformance.test_housekeeping import finish_all


async def test_sqlite_has_nothing_to_vacuum(sqlite_url: str) -> None:
    # A deleted or updated row's space is free at once there; its index entries go with it.
    driver = connect(sqlite_url)
    try:
        await finish_all(driver, 200)
        assert not await driver.vacuum_jobs(1)
    finally:
        await driver.close()
