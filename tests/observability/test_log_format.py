"""One log format for `jobq worker` and for a script that runs a worker: console text on a
terminal, JSON lines otherwise, JOBQ_LOG_JSON deciding when set; one line per retry."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SCRIPT = """
import asyncio, sys
from jobq import JobContext, JobQueue

jq = JobQueue()  # JOBQ_DATABASE_URL

@jq.task(retry_base=60, retry_cap=60)
async def flaky(ctx: JobContext) -> None:
    raise ConnectionError("the first try fails")

async def main() -> None:
    await jq.migrate()
    await flaky.defer()
    if sys.argv[1:] != ["seed"]:  # seed: leave the job to `jobq worker`
        await jq.run_worker(burst=True)
    await jq.close()

if __name__ == "__main__":
    asyncio.run(main())
"""
DEADLINE_S = 60


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "logapp.py").write_text(SCRIPT)
    return tmp_path


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    return {**env, **overrides}


def _run(args: list[str], cwd: Path, env: dict[str, str], *, terminal: bool) -> str:
    """What the process wrote to stderr: a pipe, or a terminal (a pseudo-terminal)."""
    if not terminal:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=DEADLINE_S
        )
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed its end
                break
            if not chunk:
                break
            out += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=DEADLINE_S) == 0, out.decode(errors="replace")
    return out.decode(errors="replace").replace("\r\n", "\n")


def _script(app: Path, url: str, *, terminal: bool, **env: str) -> str:
    return _run(
        [sys.executable, "logapp.py"], app, _env(JOBQ_DATABASE_URL=url, **env), terminal=terminal
    )


def _cli_worker(app: Path, url: str, *, terminal: bool, **env: str) -> str:
    """`jobq worker` over the same app, with one job of it waiting."""
    _run([sys.executable, "logapp.py", "seed"], app, _env(JOBQ_DATABASE_URL=url), terminal=False)
    args = [sys.executable, "-m", "jobq.cli", "worker", "logapp:jq", "--burst"]
    return _run(args, app, _env(JOBQ_DATABASE_URL=url, **env), terminal=terminal)


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing logged"
    return [json.loads(line) for line in lines]  # every line is JSON


def test_a_script_logs_json_lines_like_jobq_worker_when_not_on_a_terminal(
    app: Path,
) -> None:
    url = f"sqlite:///{app / 'script.db'}"
    script = _json_lines(_script(app, url, terminal=False))
    cli = _json_lines(_cli_worker(app, f"sqlite:///{app / 'cli.db'}", terminal=False))
    started = [next(e for e in lines if e["event"] == "worker started") for lines in (script, cli)]
    assert set(started[0]) == set(started[1])  # the same fields, the same renderer


@pytest.mark.parametrize("who", ["script", "cli"])
def test_on_a_terminal_the_lines_are_console_text_unless_json_is_asked(app: Path, who: str) -> None:
    run = _script if who == "script" else _cli_worker
    text = run(app, f"sqlite:///{app / 'a.db'}", terminal=True)
    started = [line for line in text.splitlines() if "worker started" in line]
    assert started and not started[0].lstrip().startswith("{"), text
    asked = run(app, f"sqlite:///{app / 'b.db'}", terminal=True, JOBQ_LOG_JSON="true")
    assert any(e["event"] == "worker started" for e in _json_lines(asked))


@pytest.mark.parametrize("log_jobs", ["false", "true"])
@pytest.mark.parametrize("who", ["script", "cli"])
def test_one_line_per_retry(app: Path, who: str, log_jobs: str) -> None:
    run = _script if who == "script" else _cli_worker
    lines = _json_lines(
        run(app, f"sqlite:///{app / 'r.db'}", terminal=False, JOBQ_LOG_JOBS=log_jobs)
    )
    about_the_attempt = [e for e in lines if e.get("job_id") is not None]
    assert len(about_the_attempt) == 1, about_the_attempt
    (line,) = about_the_attempt
    assert "the first try fails" in line["error"] and line["retry_in_s"] > 0
