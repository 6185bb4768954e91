"""`jobq bench` at a tiny N keeps working (figures are for docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .pg_server import PgServer

EXPECTED_CASES = {
    "enqueue one by one",
    "enqueue_many (chunks of 5000)",
    "drain, 1 worker process(es)",
    "drain, 2 worker process(es)",
    "end to end, 2 idle workers",
    "idle latency enqueue -> start",
}


def run_bench(url: str) -> dict[str, dict[str, object]]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobq.cli",
            "bench",
            "--database-url",
            url,
            "--jobs",
            "60",
            "--samples",
            "5",
            "--cases",
            "enqueue,drain,e2e,latency",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["machine"]["cpus"]
    return {r["case"]: r for r in report["results"]}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_bench_runs_every_case_and_checks_its_work(
    kind: str, tmp_path: Path, pg_server: PgServer
) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}" if kind == "sqlite" else pg_server.admin_url
    results = run_bench(url)
    assert set(results) == EXPECTED_CASES
    for name, result in results.items():
        assert result["n"] in (60, 5), name
        assert float(result["seconds"]) > 0, name  # type: ignore[arg-type]
    for name in ("drain, 1 worker process(es)", "end to end, 2 idle workers"):
        assert float(results[name]["reference_per_second"]) > 0  # type: ignore[arg-type]
        assert float(results[name]["worker_cpu_s"]) > 0  # type: ignore[arg-type]
    latency = results["idle latency enqueue -> start"]["extra"]
    assert isinstance(latency, dict) and latency["p50_ms"] > 0
