"""A URL that cannot work says what is wrong, in one line, at once: a database that does
not exist, a server that refuses the credentials, a port nobody listens on. Not the pool's
retries logged line after line, then "no database connection free"."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from jobq import ConfigurationError, DatabaseUnavailableError, JobQueue

from ..pg_server import PgServer

MISSING_DB = "jobq_no_such_database"


@pytest.fixture
def missing_db_url(pg_server: PgServer) -> str:
    return pg_server.url_for(MISSING_DB)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def refusing_password_server() -> Iterator[int]:
    """A TCP server speaking just enough of PostgreSQL's protocol to refuse every login as
    a server with the wrong password would (SQLSTATE 28P01); its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    while True:
                        (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
                        body = conn.recv(length - 4, socket.MSG_WAITALL)
                        (code,) = struct.unpack("!I", body[:4])
                        if code in (80877103, 80877104):  # SSL or GSS encryption request
                            conn.sendall(b"N")
                            continue
                        fields = b"".join(
                            tag + text.encode() + b"\0"
                            for tag, text in (
                                (b"S", "FATAL"),
                                (b"V", "FATAL"),
                                (b"C", "28P01"),
                                (b"M", 'password authentication failed for user "app"'),
                            )
                        )
                        message = fields + b"\0"
                        conn.sendall(b"E" + struct.pack("!I", len(message) + 4) + message)
                        break
                except (OSError, struct.error):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()


def _no_pool_noise(caplog: pytest.LogCaptureFixture) -> None:
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")]
    assert noise == [], noise


async def test_a_database_that_does_not_exist_is_named(
    missing_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    jq = JobQueue(missing_db_url)
    try:
        with pytest.raises(ConfigurationError, match=f'database "{MISSING_DB}" does not exist'):
            await asyncio.wait_for(jq.stats(), 30)
    finally:
        await jq.close()
    _no_pool_noise(caplog)


def test_a_database_that_does_not_exist_is_named_from_sync_code(missing_db_url: str) -> None:
    with (
        JobQueue(missing_db_url) as jq,
        pytest.raises(ConfigurationError, match=f'database "{MISSING_DB}" does not exist'),
    ):
        jq.enqueue_sync("anything", {})


async def test_a_port_nobody_listens_on_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    jq = JobQueue(f"postgresql://postgres@127.0.0.1:{port}/app")
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            await asyncio.wait_for(jq.stats(), 30)
    finally:
        await jq.close()
    message = str(raised.value)
    assert f"port {port}" in message and "Connection refused" in message, message
    assert "\n" not in message
    _no_pool_noise(caplog)


async def test_a_wrong_password_is_an_authentication_failure() -> None:
    with refusing_password_server() as port:
        jq = JobQueue(f"postgresql://app:wrong@127.0.0.1:{port}/app")
        try:
            with pytest.raises(ConfigurationError, match="password authentication failed"):
                await asyncio.wait_for(jq.stats(), 30)
        finally:
            await jq.close()


async def test_a_worker_on_a_database_that_does_not_exist_stops_with_the_reason(
    missing_db_url: str,
) -> None:
    """Waiting would not fix the URL: the worker ends at once instead of retrying forever."""
    jq = JobQueue(missing_db_url)
    try:
        with pytest.raises(ConfigurationError, match="does not exist"):
            await asyncio.wait_for(jq.run_worker(burst=True), 30)
    finally:
        await jq.close()


def test_the_cli_says_what_is_wrong_in_one_line(missing_db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "status", "-d", missing_db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f'database "{MISSING_DB}" does not exist' in lines[0], lines[0]


async def test_an_outage_at_start_is_left_to_the_first_use() -> None:
    """``open()`` (an API's or a worker's start) does not fail on an outage: the database may
    come back, and the first use reports it (a worker waits it out)."""
    jq = JobQueue(f"postgresql://postgres@127.0.0.1:{_free_port()}/app")
    try:
        await jq.open()
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(jq.stats(), 30)
    finally:
        await jq.close()


async def test_callers_waiting_for_the_first_connection_share_one_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During an outage every caller that needs the pool meanwhile gets the one attempt's
    answer: not the k-th caller after k attempts (k timeouts, on a host that drops packets)."""
    from jobq.storage.postgres import driver as postgres_driver

    attempts = 0
    answer = asyncio.Event()

    async def unreachable(*_: object) -> None:
        nonlocal attempts
        attempts += 1
        await answer.wait()
        raise DatabaseUnavailableError("cannot connect to PostgreSQL (test)")

    monkeypatch.setattr(postgres_driver, "check_first_connection", unreachable)
    jq = JobQueue(f"postgresql://127.0.0.1:{_free_port()}/app")
    try:
        calls = [asyncio.create_task(jq.stats()) for _ in range(5)]
        for _ in range(20):  # turns of the loop: every call reaches the pool's opening
            await asyncio.sleep(0)
        assert attempts == 1
        answer.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, DatabaseUnavailableError) for r in results), results
        assert attempts == 1
    finally:
        await jq.close()
