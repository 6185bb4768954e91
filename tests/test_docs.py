"""The docs stay true to the code: every setting documented, the README's example runs."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from jobq import JobQueue
from jobq.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [f"JOBQ_{name.upper()}" for name in Settings.model_fields]


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in SETTINGS if name not in text]
    assert not missing, f"{document} does not mention {missing}"


def test_env_example_has_no_unknown_settings() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("JOBQ_")
    }
    assert names == set(SETTINGS)


def run_example(name: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Run examples/<name>.py on a fresh SQLite file or PostgreSQL database; its stdout."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'example.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_quickstart_example_runs(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    out = run_example("quickstart", kind, tmp_path, request)
    assert "send_email -> {'sent_to': 'a@example.com'}" in out
    assert "resize     -> ['img0.png@640', 'img1.png@640', 'img2.png@640']" in out
    assert "scheduled  -> queued" in out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_flow_control_example_runs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = run_example("flow_control", kind, tmp_path, request)
    assert "notify     -> succeeded told ops" in out
    assert "orphan     -> cancelled dependency" in out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sync_producer_example_runs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = run_example("sync_producer", kind, tmp_path, request)
    assert out.splitlines()[-2:] == [  # after the worker's log lines
        "send_receipt -> succeeded receipt for order 1",
        "send_receipt -> succeeded receipt for order 2",
    ]


def test_the_readme_states_the_default_retry_for() -> None:
    default = inspect.signature(JobQueue.task).parameters["retry_for"].default
    written = "(" + ", ".join(e.__name__ for e in default) + ",)"
    assert f"`retry_for` defaults to `{written}`" in (ROOT / "README.md").read_text()


def test_the_readme_says_how_make_test_runs() -> None:
    """How long, how to run a part, and that lint and types come first (as the Makefile
    has it: the test target depends on lint)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("`make test` runs") :]
    section = section[: section.index("\n\n")]
    assert "minutes" in section and 'make test PYTEST_ARGS="' in section
    assert "ruff" in section and "mypy" in section and "first" in section
    target = next(
        line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("test:")
    )
    assert "lint" in target.split(":", 1)[1].split()
