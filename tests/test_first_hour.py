"""The README as a newcomer meets it: every code block, as written, on SQLite and on
PostgreSQL, in processes of its own, in a fresh directory with a fresh database, each
checked to end (within a deadline) and to do what its comments say.

Blocks are found by their fences and told apart by what they contain, never by line
numbers. A shell block's commands run one by one; a long-running server among them
(`make run`) is started, waited for (``/ready``), left up for the blocks after it (the
"other terminal"), and stopped with Ctrl-C as a person would. A python block runs as a
script. A block this file has no rule for is run the same way, so a new README block is
tried as soon as it is written; the only blocks not run are listed in ``NOT_RUN``, each
with its reason.

What is adapted, and why: the databases (each run gets its own: a block's JobQueue is
pointed at a throwaway PostgreSQL database, or on SQLite at ``sqlite:///example.db`` in the
block's fresh directory, as the library example names it), the HTTP port (a free one
instead of 8000, which another program may hold), and ``.venv``: ``make`` finds it ready
(the suite's own interpreter and this checkout's code) instead of installing from the
network.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from jobq import JobQueue, JobStatus

from .api.live import free_port
from .pg_server import PgServer

ROOT = Path(__file__).resolve().parents[1]
# A command or script of the README, however heavy (1,002 jobs through a burst worker),
# takes seconds; the bounds are for a stall.
COMMAND_DEADLINE_S = 120.0
SERVER_READY_S = 120.0
JOBS_DONE_S = 120.0
SERVER_STOP_S = 60.0

# Blocks not run, found by a string they contain: why each is not.
NOT_RUN = {
    "jobq bench": "measures for minutes on purpose; tests/test_bench_smoke.py runs "
    "`jobq bench` on small counts",
    "INSERT INTO orders": "a fragment of the reader's own code (their connection, their "
    "orders table); tests/postgres/test_callers_transaction.py runs the same on a real "
    "transaction",
    "@jq.task(max_running=3)": "a tour of fragments (fetch, parse, refresh... are the "
    "reader's); examples/flow_control.py is its runnable version, run by tests/test_docs.py",
}
# Commands of a block that runs, not run here: why each is not.
COMMANDS_NOT_RUN = {"make test": "it is this test suite"}
# Commands that serve until stopped.
SERVERS = re.compile(r"^(make run\b|(\S*/)?jobq (serve|api)\b)")

_databases = itertools.count()


@dataclass
class Block:
    lang: str
    text: str
    heading: str  # the nearest heading above: where a failure points the reader

    def __str__(self) -> str:
        first = next(line for line in self.text.splitlines() if line.strip())
        return f"the {self.lang} block under {self.heading!r} ({first.strip()[:60]})"


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md, in order (those inside list items too)."""
    readme = (ROOT / "README.md").read_text()
    blocks = []
    fence = re.compile(r"^([ \t]*)```([\w-]*)[ \t]*\n(.*?)\n\1```[ \t]*$", re.M | re.S)
    for match in fence.finditer(readme):
        headings = re.findall(r"^#{1,6} +(.+)$", readme[: match.start()], re.M)
        text = textwrap.dedent(match.group(3))
        blocks.append(Block(match.group(2) or "text", text, headings[-1] if headings else ""))
    return blocks


def not_run(block: Block) -> str | None:
    return next((why for marker, why in NOT_RUN.items() if marker in block.text), None)


def shell_commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines dropped (a
    comment after a command is left to the shell)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


# ---------------------------------------------------------------------------- the newcomer


@dataclass
class Newcomer:
    """A fresh directory that looks like a clone to make and to the README's commands, and
    the database of what it runs there."""

    home: Path
    env: dict[str, str]
    port: int
    database_url: str | None  # None: the README's default, ./jobq.db
    server: subprocess.Popen[str] | None = None
    server_log: Path | None = None
    ran: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def adapted(self, command: str) -> str:
        return re.sub(r"(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{self.port}", command)

    def run(self, command: str) -> str:
        """Run one command to its end; its stdout."""
        try:
            done = subprocess.run(
                ["bash", "-c", self.adapted(command)],
                cwd=self.home,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_DEADLINE_S,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"`{command}` did not end within {COMMAND_DEADLINE_S} s: {exc.stderr}")
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr}"
        self.ran.append(command)
        return done.stdout

    def serve(self, command: str) -> None:
        """Start a server command and wait until its API answers /ready."""
        assert self.server is None, "two servers in one README session"
        self.server_log = self.home / "server.log"
        self.server = subprocess.Popen(
            ["bash", "-c", self.adapted(command)],
            cwd=self.home,
            env=self.env,
            stdout=self.server_log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: Ctrl-C reaches make and jobq
        )
        deadline = time.monotonic() + SERVER_READY_S
        while not self._ready():
            if self.server.poll() is not None:
                pytest.fail(f"`{command}` exited {self.server.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"`{command}` not ready within {SERVER_READY_S} s:\n{self.log()}")
            time.sleep(0.1)
        self.ran.append(command)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def log(self) -> str:
        return self.server_log.read_text(errors="replace")[-3000:] if self.server_log else ""

    def stop(self) -> None:
        """Ctrl-C, as in the terminal that runs it; it must end by itself."""
        if self.server is None or self.server.poll() is not None:
            return
        os.killpg(self.server.pid, signal.SIGINT)
        try:
            self.server.wait(timeout=SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
            pytest.fail(
                f"the server did not stop within {SERVER_STOP_S} s of Ctrl-C:\n{self.log()}"
            )


def _shim(path: Path, command: str) -> None:
    path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    path.chmod(0o755)


@contextmanager
def newcomer(home: Path, database_url: str | None) -> Iterator[Newcomer]:
    home.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, home / name)
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    _shim(bin_dir / "python", sys.executable)
    _shim(bin_dir / "jobq", f"{sys.executable} -m jobq.cli")
    for stamp in (
        ".installed-run",
        ".installed",
    ):  # newer than pyproject.toml: make installs nothing
        (home / ".venv" / stamp).touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    port = free_port()
    env |= {"PYTHONPATH": str(ROOT / "src"), "JOBQ_API_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    if database_url is not None:
        env["JOBQ_DATABASE_URL"] = database_url
    person = Newcomer(home, env, port, database_url)
    try:
        yield person
    finally:
        if person.server is not None and person.server.poll() is None:
            os.killpg(person.server.pid, signal.SIGKILL)
            person.server.wait()


class Databases:
    """A throwaway database per run: a new PostgreSQL database, or a SQLite file's URL."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server: PgServer | None = (
            request.getfixturevalue("pg_server") if kind == "postgres" else None
        )
        self.made: list[str] = []

    def new(self, home: Path) -> str:
        """A new PostgreSQL database's URL (SQLite runs use a file in ``home``)."""
        assert self.server is not None, "SQLite runs use the README's own file names"
        name = f"jobq_fh_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.made.append(name)
        return self.server.url_for(name)

    def drop_all(self) -> None:
        if self.server is None:
            return
        with psycopg.connect(self.server.admin_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


# ---------------------------------------------------------------------------- the blocks


def run_shell_blocks(person: Newcomer, blocks: list[Block], skipped: dict[str, str]) -> None:
    """The shell blocks in README order, in one clone (a server stays up for the blocks
    after it, as in a second terminal), each command checked as its comment promises."""
    for block in blocks:
        for command in shell_commands(block.text):
            name = command.split("#", 1)[0].strip()
            if name in COMMANDS_NOT_RUN:
                skipped[name] = COMMANDS_NOT_RUN[name]
            elif SERVERS.match(name):
                person.serve(name)
            else:
                check_command(person, name, person.run(command))
    if person.server is not None:
        all_jobs_finish(person)
        person.stop()
        assert "worker stopped" in person.log(), person.log()  # stopped cleanly


def check_command(person: Newcomer, command: str, out: str) -> None:
    """What a command's comment in the README says it does."""
    if command.startswith("curl") and "/jobs" in command:
        job = json.loads(out)
        assert job["kind"] == "send_email", out
        finished = wait_for_job(person, job["id"])
        assert finished["status"] == "succeeded", finished
    elif "jobq demo" in command:
        count = re.search(r"--count (\d+)", command)
        assert f"enqueued {count.group(1) if count else ''}".strip() in out, out
    elif "jobq status" in command:
        assert "QUEUE" in out and "default" in out, out  # counts by queue and status
        assert re.search(r"workers: [1-9]", out), out  # the live worker of `make run`


def wait_for_job(person: Newcomer, job_id: int) -> dict[str, object]:
    deadline = time.monotonic() + JOBS_DONE_S
    while True:
        job = person.get(f"/jobs/{job_id}")
        assert isinstance(job, dict)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['status']} after {JOBS_DONE_S} s")
        time.sleep(0.2)


def all_jobs_finish(person: Newcomer) -> None:
    """`make run`'s worker runs every job the session enqueued: the demo kinds fail at most
    their first attempt, so each ends succeeded; its log shows them (JOBQ_LOG_JOBS)."""
    unfinished = "&".join(f"status={s}" for s in ("queued", "running", "retrying", "failed"))
    deadline = time.monotonic() + JOBS_DONE_S
    while True:
        page = person.get(f"/jobs?{unfinished}&limit=5")
        assert isinstance(page, dict)
        left = page["items"]
        if not left:
            break
        assert all(j["status"] != "failed" for j in left), left
        if time.monotonic() > deadline:
            pytest.fail(f"jobs still unfinished after {JOBS_DONE_S} s: {left}")
        time.sleep(0.2)
    done = person.get("/jobs?status=succeeded&limit=1000")
    assert isinstance(done, dict) and len(done["items"]) >= 1
    assert "job finished" in person.log(), person.log()


def pointed_at(block: Block, url: str) -> str:
    """The block with its ``JobQueue("...")``, if it opens one, pointed at ``url``."""
    pointed, count = re.subn(r'JobQueue\("[^"]*"\)', f"JobQueue({url!r})", block.text)
    assert count <= 1, f"{block} opens more than one JobQueue by URL"
    return pointed


def run_python_block(block: Block, home: Path, url: str) -> str:
    """Run the block as a script in ``home``, its JobQueue on ``url``; its stdout."""
    home.mkdir(parents=True)
    script = home / "example.py"
    script.write_text(pointed_at(block, url))
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=home,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=COMMAND_DEADLINE_S,
        )
    except subprocess.TimeoutExpired as exc:
        # The script never closes its JobQueue: it must still exit once main() returns.
        pytest.fail(f"{block} did not end within {COMMAND_DEADLINE_S} s:\n{exc.stdout!r}")
    assert done.returncode == 0, f"{block} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


async def check_library_example(block: Block, url: str, out: str) -> None:
    """What the library example's comments say: the first job ran and stored its result,
    the one deferred by 60 s waits, the 1,000 resizes enqueued in one call all ran."""
    assert "close" not in block.text, "the example closes its queue: its exit proves nothing"
    last = out.strip().splitlines()[-1]
    assert "status=<JobStatus.SUCCEEDED" in last and "'sent_to': 'a@b.c'" in last, out[-3000:]
    jq = JobQueue(url)
    try:
        counts = {(s.queue, s.status): s.count for s in await jq.stats()}
    finally:
        await jq.close()
    assert counts == {
        ("email", JobStatus.SUCCEEDED): 1,
        ("email", JobStatus.QUEUED): 1,  # delay=60: later
        ("default", JobStatus.SUCCEEDED): 1000,
    }, counts


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_every_readme_block_runs_as_written(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no code blocks"
    unused = [m for m in NOT_RUN if not any(m in b.text for b in blocks)]
    assert not unused, f"NOT_RUN lists blocks the README no longer has: {unused}"
    databases = Databases(kind, tmp_path, request)
    skipped: dict[str, str] = {}
    try:
        shell = []
        for index, block in enumerate(blocks):
            why = not_run(block)
            if why is not None:
                skipped[str(block)] = why
            elif block.lang in ("bash", "sh", "shell", "console"):
                shell.append(block)
            elif block.lang == "python":
                home = tmp_path / f"script{index}"
                if kind == "postgres":
                    url = database = databases.new(home)
                else:  # the example's own SQLite file, next to the script
                    url, database = "sqlite:///example.db", f"sqlite:///{home / 'example.db'}"
                out = await asyncio.to_thread(run_python_block, block, home, url)
                if "def send_email" in block.text and "print(await jq.get(" in block.text:
                    await check_library_example(block, database, out)
            else:
                pytest.fail(f"{block}: no rule runs {block.lang!r}; run it, or list it in NOT_RUN")
        clone = tmp_path / "clone"
        with newcomer(clone, databases.new(clone) if kind == "postgres" else None) as person:
            await asyncio.to_thread(run_shell_blocks, person, shell, skipped)
        assert person.ran, "no shell command of the README ran"
    finally:
        databases.drop_all()
