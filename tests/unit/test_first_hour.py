"""What a newcomer meets first: mistakes refused with a message to act on, APIs that do what
their names promise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jobq import ConfigurationError, JobQueue, Settings

from ..waiting import eventually


def test_an_unsupported_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="database_url must start with postgresql://"):
        JobQueue("mysql://localhost/app")


def test_an_unsupported_database_url_says_in_one_line_what_is_supported() -> None:
    with pytest.raises(ConfigurationError) as refused:
        JobQueue("mysql://app:secret@localhost/app")
    message = str(refused.value)
    assert message == (
        "database_url must start with postgresql://, postgres:// or sqlite:/// "
        "(jobq stores its jobs in PostgreSQL or SQLite), not mysql://"
    )


def test_a_bad_setting_from_the_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBQ_CONCURRENCY", "lots")
    with pytest.raises(ConfigurationError, match="concurrency"):
        JobQueue()


async def test_a_worker_stop_can_be_awaited(tmp_path: Path) -> None:
    jq = JobQueue(f"sqlite:///{tmp_path}/jobq.db")
    try:
        await jq.migrate()
        worker = jq.worker(concurrency=1)
        await worker.stop()  # not running: returns at once
        worker = jq.worker(concurrency=1)
        running = asyncio.create_task(worker.run())
        await eventually(jq.workers, what="the worker registered")
        await worker.stop()  # waits until run() has returned
        assert running.done()
    finally:
        await jq.close()


def test_an_empty_log_json_decides_by_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """``JOBQ_LOG_JSON=`` as .env.example writes it: the same as unset, not a parse error."""
    monkeypatch.setenv("JOBQ_LOG_JSON", "")
    assert Settings().log_json is None
