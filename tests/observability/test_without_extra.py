"""Without the otel extra (the packages it adds hidden from the import system), or with it
installed but nothing configured, jobq works and does not trace: no tracer, no trace context stored,
and the OpenTelemetry SDK is never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, sys
if sys.argv[2] == "hidden":
    # As if the extra were not installed: importing what it adds fails. (The API alone is
    # no sign of it: FastAPI itself depends on opentelemetry-api.)
    for name in ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation"):
        sys.modules[name] = None

from jobq import JobQueue
from jobq.api import create_app
from jobq.config import Settings
from jobq.observability.logging import configure_logging

async def main() -> None:
    configure_logging(Settings(log_level="WARNING"))
    async with JobQueue(sys.argv[1]) as jq:
        await jq.migrate()

        @jq.task(name="noop")
        async def noop(ctx) -> None:
            return None

        create_app(jq)
        job = await noop.defer()
        await jq.run_worker(burst=True)
        done = await jq.get(job.id)
        assert done.status == "succeeded", done
        assert jq.tracer is None
        assert done.trace_context is None
    assert sys.modules.get("opentelemetry.sdk") is None, "the SDK was imported"
    print("ok")

asyncio.run(main())
"""


@pytest.mark.parametrize("extra", ["hidden", "installed"])
def test_no_tracing_and_no_sdk_import_without_configuration(tmp_path: Path, extra: str) -> None:
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no OTEL_* variables
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'jobq.db'}", extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_free,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ok"
