"""The README's library example, as a new user runs it: a script of its own that never calls
``jq.close()``, on SQLite (the default) and on PostgreSQL. It must do its work and then exit."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The work itself (1,002 jobs through a burst worker) takes seconds; the bound is for a stall.
WORK_TIMEOUT_S = 120.0
# Once main() has printed its last line nothing is left to do but leave the interpreter.
EXIT_TIMEOUT_S = 10.0


def library_example() -> str:
    """The first ```python block under "## Library" in README.md."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)\n```", section, re.DOTALL)
    assert match, "README.md's Library section has no python block"
    return match.group(1)


def pointed_at(code: str, url: str) -> str:
    """``code`` with its one ``JobQueue("...")`` pointed at ``url``."""
    pointed, count = re.subn(r'JobQueue\("[^"]*"\)', f"JobQueue({url!r})", code)
    assert count == 1, "the example should open exactly one JobQueue by URL"
    assert "close" not in pointed, "the example closes its queue: this test would prove nothing"
    return pointed


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_readme_library_example_exits_without_close(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobq.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    script = tmp_path / "example.py"
    script.write_text(pointed_at(library_example(), url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []

    async def until_the_job_is_printed() -> None:
        while not (lines and lines[-1].startswith("Job(")):
            line = await stdout.readline()
            if not line:
                return  # the process ended first: its exit code and output tell why
            lines.append(line.decode())

    try:
        await asyncio.wait_for(until_the_job_is_printed(), WORK_TIMEOUT_S)
        try:
            code = await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(
                f"main() returned but the interpreter did not exit within {EXIT_TIMEOUT_S} s:\n"
                + "".join(lines)[-3000:]
            )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert "status=<JobStatus.SUCCEEDED" in lines[-1], output[-3000:]
    assert "'sent_to': 'a@b.c'" in lines[-1], output[-3000:]
