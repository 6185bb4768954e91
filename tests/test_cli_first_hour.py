"""The CLI as a newcomer meets it: only `jobq migrate` migrates, commands act on your app's
tasks and database, destructive commands ask first, usage errors exit 2, a busy port is
one line naming the option, help names every option's environment variable."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobq import JobQueue
from jobq.errors import DatabaseUnavailableError

from .conftest import migrated_sqlite, run_async


def jobq(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`jobq ARGS`, not on a terminal (stdin is /dev/null)."""
    environment = {**os.environ, "COLUMNS": "200"}
    environment.pop("JOBQ_DATABASE_URL", None)
    environment.pop("JOBQ_APP", None)
    return subprocess.run(
        [sys.executable, "-m", "jobq.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**environment, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *texts: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def count_jobs(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobq_jobs").fetchone()
    return int(count)


# ---------------------------------------------------------------- the migration policy

PRODUCTION_COMMANDS = [
    ["status"],
    ["enqueue", "send_email", '{"to": "a@b.c"}'],
    ["worker", "--burst"],
    ["api", "--port", "0"],
    ["queues", "pause", "mail"],
    ["queues", "resume", "mail"],
    ["keys", "list"],
    ["keys", "create", "--admin"],
    ["keys", "revoke", "nope"],
]


@pytest.mark.parametrize("command", PRODUCTION_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_production_commands_never_create_nor_migrate_a_database(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "jobq.db"
    url = f"sqlite:///{missing}"
    one_line(jobq(*command, "-d", url), 1, "no jobq database", f"jobq migrate -d {url}")
    assert not missing.exists()
    one_line(jobq(*command, cwd=tmp_path), 1, "jobq migrate -d sqlite:///./jobq.db")
    assert list(tmp_path.iterdir()) == []

    # There but empty (no jobq schema): still no migration.
    sqlite3.connect(missing).close()
    one_line(jobq(*command, "-d", url), 1, "no jobq schema", f"jobq migrate -d {url}")
    with sqlite3.connect(missing) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_a_partly_migrated_database_is_not_migrated_behind_your_back(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = migrated_sqlite(path)
    assert jobq("migrate", "--rollback", "-d", url, "--yes").returncode == 0
    one_line(jobq("status", "-d", url), 1, "is at schema", "jobq migrate -d")
    assert jobq("migrate", "-d", url).stdout.startswith("applied: 00")  # one was missing


def test_migrate_creates_the_file_but_never_a_directory(tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "dir" / "jobq.db"
    one_line(jobq("migrate", "-d", f"sqlite:///{typo}"), 1, f"directory {typo.parent}")
    # The other commands say the same, not to run a migrate that would refuse the URL.
    told = one_line(jobq("status", "-d", f"sqlite:///{typo}"), 1, f"directory {typo.parent}")
    assert "jobq migrate" not in told
    assert list(tmp_path.iterdir()) == []
    made = jobq("migrate", "-d", f"sqlite:///{tmp_path / 'jobq.db'}")
    assert made.returncode == 0 and made.stdout.startswith("applied: 0001")


def test_the_library_never_creates_a_directory(tmp_path: Path) -> None:
    jq = JobQueue(f"sqlite:///{tmp_path / 'nonexistent_dir' / 'x.db'}")

    async def migrate() -> None:
        try:
            await jq.migrate()
        finally:
            await jq.close()

    with pytest.raises(DatabaseUnavailableError, match="does not exist"):
        run_async(migrate)
    assert list(tmp_path.iterdir()) == []


def test_demo_migrates_for_development_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    first = jobq("demo", "-d", url, "--count", "2")
    assert first.returncode == 0, first.stderr
    assert "migrated" in first.stderr and "jobq migrate" in first.stderr
    assert first.stdout.startswith("enqueued 2 demo jobs")
    again = jobq("demo", "-d", url, "--count", "2")
    assert again.returncode == 0 and "migrated" not in again.stderr  # nothing left to apply


# ---------------------------------------------------------------- the CLI knows your app

APP_MODULE = """
from jobq import JobContext, JobQueue

jq = JobQueue("sqlite:///app.db")  # relative to where jobq runs


@jq.task(queue="video", max_attempts=2)
def transcode(ctx: JobContext, src: str) -> str:
    return src.upper()


@jq.periodic("0 9 * * *", name="a_schedule_with_a_rather_long_name", tz="Europe/Paris")
def morning(ctx: JobContext) -> None:
    pass


@jq.periodic("*/5 * * * *")
def often(ctx: JobContext) -> None:
    pass
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(textwrap.dedent(APP_MODULE))
    migrated = jobq("migrate", "myapp:jq", cwd=tmp_path)  # the app's own database
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "app.db").exists() and not (tmp_path / "jobq.db").exists()
    return tmp_path


def test_commands_use_the_apps_tasks_and_database(app_dir: Path) -> None:
    created = jobq("enqueue", "myapp:jq", "transcode", '{"src": "a.mp4"}', cwd=app_dir)
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert (job["kind"], job["queue"], job["max_attempts"]) == ("transcode", "video", 2)
    with_env = jobq("enqueue", "transcode", '{"src": "b.mp4"}', cwd=app_dir, env=APP_ENV)
    assert json.loads(with_env.stdout)["queue"] == "video", with_env.stderr
    assert count_jobs(app_dir / "app.db") == 2
    assert not (app_dir / "jobq.db").exists()  # nothing went to the default database

    status = jobq("status", cwd=app_dir, env=APP_ENV)
    assert re.search(r"video\s+queued\s+2", status.stdout), status.stdout + status.stderr
    paused = jobq("queues", "pause", "myapp:jq", "video", cwd=app_dir)
    assert paused.stdout.strip() == "video: paused", paused.stderr
    resumed = jobq("queues", "resume", "video", cwd=app_dir, env=APP_ENV)
    assert resumed.stdout.strip() == "video: resumed", resumed.stderr
    ran = jobq("worker", "myapp:jq", "--burst", cwd=app_dir)
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"video\s+succeeded\s+2", jobq("status", "myapp:jq", cwd=app_dir).stdout)

    # -d overrides the app's database, for every command alike.
    other = migrated_sqlite(app_dir / "other.db")
    assert jobq("status", "myapp:jq", "-d", other, cwd=app_dir).stdout.startswith("no jobs")
    moved = jobq("enqueue", "myapp:jq", "transcode", '{"src": "c"}', "-d", other, cwd=app_dir)
    assert json.loads(moved.stdout)["queue"] == "video", moved.stderr
    assert count_jobs(app_dir / "other.db") == 1
    assert jobq("schedules", "myapp:jq", "-d", other, cwd=app_dir).returncode == 0


APP_ENV = {"JOBQ_APP": "myapp:jq"}


def test_schedules_are_aligned_and_in_their_time_zone(app_dir: Path) -> None:
    listed = jobq("schedules", "myapp:jq", cwd=app_dir)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.rstrip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S", header)]
    assert header.split() == ["NAME", "CRON", "TZ", "TASK", "NEXT", "TICK"]
    columns = [*starts[:4], starts[4]]  # NAME CRON TZ TASK NEXT-TICK
    assert len(rows) == 2
    for row in rows:
        for start in columns[1:]:
            assert row[start - 1] == " " and row[start] != " ", (header, row)
    by_name = {row.split()[0]: row for row in rows}
    paris = by_name["a_schedule_with_a_rather_long_name"]
    assert "Europe/Paris" in paris
    tick = datetime.fromisoformat(paris[columns[4] :].strip())
    assert tick.utcoffset() == tick.astimezone(ZoneInfo("Europe/Paris")).utcoffset()
    assert (tick.hour, tick.minute) == (9, 0)  # 09:00 where the schedule is read
    assert "UTC" in by_name["often"]


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("json:nope", "module 'json' has no attribute 'nope'"),
        ("json:dumps", "is not a JobQueue but a function"),
        ("no_such_module:jq", "cannot import 'no_such_module'"),
        ("nocolon", "APP must look like"),
    ],
)
def test_a_wrong_app_says_what_is_wrong(tmp_path: Path, spec: str, text: str) -> None:
    one_line(jobq("worker", spec, "--burst", "-d", f"sqlite:///{tmp_path / 'x.db'}"), 2, text)


# ---------------------------------------------------------------- destructive commands


@pytest.mark.parametrize("how", [["--rollback"], ["--rollback", "3"], ["--refresh"]])
def test_destructive_migrations_need_yes_without_a_terminal(tmp_path: Path, how: list[str]) -> None:
    url = migrated_sqlite(tmp_path / "keep.db")
    with JobQueue(url) as jq:
        jq.enqueue_sync("send_email", {"to": "a@b.c"})
    one_line(jobq("migrate", *how, "-d", url), 2, "--yes")
    assert count_jobs(tmp_path / "keep.db") == 1  # nothing dropped
    done = jobq("migrate", *how, "-d", url, "--yes")
    assert done.returncode == 0 and done.stdout.startswith("rolled back: 00"), done.stderr


def test_destructive_migrations_ask_on_a_terminal(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "keep.db")
    with JobQueue(url) as jq:
        jq.enqueue_sync("send_email", {"to": "a@b.c"})

    def on_terminal(answer: bytes) -> tuple[int, str]:
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "jobq.cli", "migrate", "--refresh", "-d", url],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        seen = b""
        while b"[y/N]" not in seen:  # the question comes before any change
            chunk = os.read(controller, 1024)
            assert chunk, seen
            seen += chunk
        os.write(controller, answer)
        out, _ = process.communicate(timeout=60)
        os.close(controller)
        return process.returncode, seen.decode() + out.decode()

    code, shown = on_terminal(b"n\n")
    assert code == 1 and "drop every jobq table" in shown
    assert count_jobs(tmp_path / "keep.db") == 1
    code, shown = on_terminal(b"y\n")
    assert code == 0 and "applied: 0001" in shown
    assert count_jobs(tmp_path / "keep.db") == 0


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["enqueue", "send_email", "--priority", "5000"], 2, "priority"),
        (["enqueue", "send_email", "--payload", "{nope"], 2, "not valid JSON"),
        (["enqueue", "send_email", "[1]"], 2, "JSON object"),
        (["worker", "no_such_module:jq", "--burst"], 2, "cannot import"),
        (["status", "-d", "mysql://x"], 2, "database_url"),
        (["keys", "create", "--tenant", "a", "--scopes", "root"], 2, "root"),
        (["migrate", "--rollback", "0"], 2, "at least 1"),
        (["keys", "revoke", "nope"], 1, "no active key"),
    ],
)
def test_usage_errors_exit_2_runtime_failures_1(
    tmp_path: Path, args: list[str], code: int, text: str
) -> None:
    env = {"JOBQ_DATABASE_URL": migrated_sqlite(tmp_path / "x.db")}
    one_line(jobq(*args, env=env), code, text)


def test_a_bad_setting_is_a_usage_error_and_a_dead_database_a_runtime_one() -> None:
    one_line(jobq("status", env={"JOBQ_CONCURRENCY": "0"}), 2, "concurrency")
    dead = jobq("status", "-d", "postgresql://postgres@127.0.0.1:1/jobq", timeout=120)
    assert dead.returncode == 1, dead.stderr


def test_help_states_the_exit_codes() -> None:
    shown = jobq("--help").stdout
    assert "Exit codes" in shown and "usage error" in shown


# ---------------------------------------------------------------- a busy port


@pytest.mark.parametrize("command", [["serve", "--demo-jobs", "3"], ["api"]])
def test_a_busy_port_is_one_line_before_anything_is_announced(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "busy.db"
    url = migrated_sqlite(path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = jobq(*command, "-d", url, "--port", str(port))
    one_line(refused, 1, f"port {port}", "--port", "JOBQ_API_PORT")
    assert "listening" not in refused.stdout
    assert count_jobs(path) == 0  # no demo job enqueued


# ---------------------------------------------------------------- help and settings


def test_every_option_backed_by_a_setting_names_its_variable() -> None:
    shown = jobq("worker", "--help").stdout
    assert "JOBQ_METRICS_PORT" in shown
    metrics_help = shown[shown.index("--metrics-port") :].split("--", 2)[1]
    assert "env var: JOBQ_METRICS_PORT" in " ".join(metrics_help.split())
    expected = {
        "worker": ["JOBQ_APP", "JOBQ_DATABASE_URL", "JOBQ_QUEUES", "JOBQ_CONCURRENCY"],
        "serve": ["JOBQ_APP", "JOBQ_DATABASE_URL", "JOBQ_API_HOST", "JOBQ_API_PORT"],
        "api": ["JOBQ_APP", "JOBQ_DATABASE_URL", "JOBQ_API_HOST", "JOBQ_API_PORT"],
        "status": ["JOBQ_APP", "JOBQ_DATABASE_URL"],
        "schedules": ["JOBQ_APP", "JOBQ_DATABASE_URL"],
    }
    for command, names in expected.items():
        text = " ".join(jobq(command, "--help").stdout.split())
        for name in names:
            assert f"env var: {name}" in text, (command, name)
