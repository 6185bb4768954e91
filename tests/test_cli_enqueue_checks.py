"""`jobq enqueue APP ...` checks the kind and the arguments against the app's tasks, as the
library does: one line saying what is wrong, nothing stored."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

APP = """
from jobq import JobContext, JobQueue

jq = JobQueue()

@jq.task
async def send_email(ctx: JobContext, to: str, subject: str) -> None:
    return None
"""


def _enqueue(app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    env["JOBQ_DATABASE_URL"] = f"sqlite:///{app_dir / 'jobq.db'}"
    return subprocess.run(
        [sys.executable, "-m", "jobq.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_jobq_enqueue_with_an_app_checks_kind_and_arguments(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(textwrap.dedent(APP))
    assert _enqueue(tmp_path, "migrate", "myapp:jq").returncode == 0
    unknown = _error_line(_enqueue(tmp_path, "enqueue", "myapp:jq", "send_emial", "{}"))
    assert "unknown kind 'send_emial'" in unknown and "send_email" in unknown
    wrong = _error_line(
        _enqueue(tmp_path, "enqueue", "myapp:jq", "send_email", '{"too": "a", "subject": "b"}')
    )
    assert "unexpected argument 'too'" in wrong and "'to'" in wrong
    typed = _error_line(
        _enqueue(tmp_path, "enqueue", "myapp:jq", "send_email", '{"to": 123, "subject": "b"}')
    )
    assert "to: input should be a valid string" in typed
    with sqlite3.connect(tmp_path / "jobq.db") as conn:
        assert conn.execute("SELECT count(*) FROM jobq_jobs").fetchone() == (0,)
    fine = _enqueue(tmp_path, "enqueue", "myapp:jq", "send_email", '{"to": "a", "subject": "b"}')
    assert fine.returncode == 0, fine.stderr
