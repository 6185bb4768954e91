"""The CLI: each command does its job; bad input gets one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobq import JobQueue
from jobq.storage.sqlfiles import load_migrations

from .conftest import migrated_sqlite


def jobq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobq.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A migrated database: only `jobq migrate` migrates."""
    return migrated_sqlite(tmp_path / "cli.db")


def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]


def test_migrate_rollback_refresh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    versions = [f"{m.version:04d}" for m in load_migrations("sqlite")]
    every = ", ".join(versions)
    assert jobq("migrate", "-d", url).stdout.strip() == f"applied: {every}"
    assert jobq("migrate", "-d", url).stdout.strip() == "applied: nothing"
    assert jobq("migrate", "--rollback", "-d", url, "--yes").stdout.strip() == (
        f"rolled back: {versions[-1]}"
    )
    rest = len(versions) - 1
    assert jobq("migrate", "--rollback", str(rest), "-d", url, "--yes").stdout.strip() == (
        "rolled back: " + ", ".join(reversed(versions[:-1]))
    )
    refreshed = jobq("migrate", "--refresh", "-d", url, "--yes").stdout.strip().splitlines()
    assert refreshed == ["rolled back: nothing", f"applied: {every}"]


def test_enqueue_status_and_burst_worker(url: str, tmp_path: Path) -> None:
    created = jobq(
        "enqueue", "send_email", "-d", url, "--payload", '{"to": "a@b.c"}', "--priority", "5"
    )
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert (job["kind"], job["status"], job["priority"]) == ("send_email", "queued", 5)
    assert jobq("demo", "-d", url, "--count", "3").stdout.startswith("enqueued 3 demo jobs")
    status = jobq("status", "-d", url).stdout
    assert "default" in status and "queued" in status and " 4" in status
    fast = {"JOBQ_SIMULATED_TIME_SCALE": "0", "JOBQ_RETRY_BASE_S": "0"}
    ran = jobq("worker", "-d", url, "--burst", env={**os.environ, **fast})
    assert ran.returncode == 0, ran.stderr
    assert "succeeded" in jobq("status", "-d", url).stdout


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["migrate", "--rollback", "0"], "at least 1"),
        (["migrate", "--rollback", "--refresh"], "not both"),
        (["enqueue", "send_email", "--payload", "[1]"], "JSON object"),
        (["enqueue", "send_email", "--payload", "{nope"], "not valid JSON"),
        (["enqueue", "send_email", "--priority", "5000"], "priority"),
        (["bench", "--cases", "nonsense"], "unknown case"),
        (["worker", "no_such_module:jq", "--burst"], "cannot import"),
        (["worker", "json:dumps", "--burst"], "is not a JobQueue"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(url: str, args: list[str], text: str) -> None:
    one_line_error(jobq(*args, "-d", url), text)


def test_bad_database_url_is_one_line() -> None:
    one_line_error(jobq("status", "-d", "mysql://x"), "database_url")


def test_worker_serves_its_metrics(url: str) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert jobq("demo", "-d", url, "--count", "3").returncode == 0
    env = {**os.environ, "JOBQ_SIMULATED_TIME_SCALE": "0", "JOBQ_RETRY_BASE_S": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "jobq.cli", "worker", "-d", url, "--metrics-port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while 'outcome="succeeded"' not in text:  # wait for the condition, with a deadline
            assert time.monotonic() < deadline, text[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            time.sleep(0.05)
        assert "jobq_worker_jobs_claimed_total" in text
        assert "jobq_worker_jobs_in_flight" in text
    finally:
        process.terminate()
        assert process.wait(60) == 0


def test_queues_pause_and_resume(url: str) -> None:
    assert jobq("queues", "pause", "mail", "-d", url).stdout.strip() == "mail: paused"
    assert jobq("queues", "pause", "mail", "-d", url).stdout.strip() == "mail: already paused"
    assert jobq("queues", "resume", "mail", "-d", url).stdout.strip() == "mail: resumed"
    assert jobq("queues", "resume", "mail", "-d", url).stdout.strip() == "mail: already resumed"
    one_line_error(jobq("queues", "pause", "", "-d", url), "queue name")


def test_api_refuses_a_non_loopback_address_without_a_key(url: str) -> None:
    for command in ("api", "serve"):
        refused = jobq(command, "-d", url, "--host", "0.0.0.0", "--port", "1")
        one_line_error(refused, "jobq keys create")


def test_keys_create_list_revoke(url: str) -> None:
    created = jobq(
        "keys",
        "create",
        "-d",
        url,
        "--tenant",
        "acme",
        "--scopes",
        "jobs:read,jobs:write",
        "--name",
        "ci",
        "--expires-in",
        "90d",
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("jobq_") and len(secret.splitlines()) == 1
    key_id = secret.split("_")[1]
    listed = jobq("keys", "list", "-d", url).stdout
    assert key_id in listed and "acme" in listed and "jobs:read,jobs:write" in listed
    assert "active" in listed and secret.split("_", 2)[2] not in listed  # no secret shown
    assert jobq("keys", "revoke", key_id, "-d", url).stdout.strip() == f"revoked {key_id}"
    assert "revoked" in jobq("keys", "list", "-d", url).stdout
    one_line_error(jobq("keys", "revoke", key_id, "-d", url), "no active key")
    one_line_error(jobq("keys", "create", "-d", url, "--tenant", "a", "--scopes", "root"), "root")
    one_line_error(jobq("keys", "create", "-d", url, "--scopes", "jobs:read"), "--admin")
    assert jobq("keys", "create", "--admin", "-d", url).returncode == 0


def test_the_worker_runs_on_uvloop_when_it_is_installed(url: str, tmp_path: Path) -> None:
    """The worker's event loop is uvloop's, as the API server's is (uvicorn[standard])."""
    (tmp_path / "loopapp.py").write_text(
        "import asyncio\n"
        "from jobq import JobQueue\n"
        "jq = JobQueue()\n"
        "@jq.task()\n"
        "async def which_loop(ctx) -> str:\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
    )
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "PYTHONPATH": str(tmp_path)}
    assert jobq("enqueue", "loopapp:jq", "which_loop", "{}", env=env).returncode == 0
    ran = jobq("worker", "loopapp:jq", "--burst", env=env)
    assert ran.returncode == 0, ran.stderr

    async def result() -> object:
        jq = JobQueue(url)
        try:
            (job,) = await jq.list(kind="which_loop")
            return job.result
        finally:
            await jq.close()

    assert asyncio.run(result()) == "uvloop"
