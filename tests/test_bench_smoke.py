"""`jobq bench` at a tiny N keeps working (figures are for docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .pg_server import PgServer

EXPECTED_CASES = {
    "enqueue one by one",
    "enqueue one by one (sync)",
    "enqueue_many (chunks of 5000)",
    "drain, 1 worker process(es)",
    "drain, 2 worker process(es)",
    "end to end, 2 idle workers",
    "idle latency enqueue -> start",
}


def run_bench(
    url: str, cases: str = "enqueue,drain,e2e,latency", env: dict[str, str] | None = None
) -> dict[str, Any]:
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
            "--steady-jobs",
            "300",
            "--cases",
            cases,
            "--json",
        ],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout)
    assert report["machine"]["cpus"]
    return report


def by_case(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in report["results"]}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_bench_runs_every_case_and_checks_its_work(
    kind: str, tmp_path: Path, pg_server: PgServer
) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}" if kind == "sqlite" else pg_server.admin_url
    report = run_bench(url)
    assert report["claim_async_commit"] is False
    results = by_case(report)
    postgres_only = {"enqueue one by one, 32 producers"} if kind == "postgres" else set()
    assert set(results) == EXPECTED_CASES | postgres_only
    for name, result in results.items():
        assert result["n"] in (60, 5), name
        assert float(result["seconds"]) > 0, name
    for name in ("drain, 1 worker process(es)", "end to end, 2 idle workers"):
        assert float(results[name]["reference_per_second"]) > 0
        assert float(results[name]["worker_cpu_s"]) > 0
    latency = results["idle latency enqueue -> start"]["extra"]
    assert isinstance(latency, dict) and latency["p50_ms"] > 0
    if kind == "postgres":  # beside its bare references, measured in the same run
        assert latency["bare_p50_ms"] > 0
        concurrent = results["enqueue one by one, 32 producers"]
        assert float(concurrent["reference_per_second"]) > 0


def test_bench_says_when_its_workers_claim_with_asynchronous_commit(pg_server: PgServer) -> None:
    report = run_bench(pg_server.admin_url, "latency", {"JOBQ_CLAIM_ASYNC_COMMIT": "true"})
    assert report["claim_async_commit"] is True
    latency = by_case(report)["idle latency enqueue -> start"]["extra"]
    assert isinstance(latency, dict) and latency["p50_ms"] > 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_long_running_case_reports_each_tenth(
    kind: str, tmp_path: Path, pg_server: PgServer
) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}" if kind == "sqlite" else pg_server.admin_url
    (result,) = run_bench(url, "steady")["results"]
    assert result["case"] == "long-running queue, 2 processes"
    assert result["n"] == 300 and float(result["per_second"]) > 0
    extra = result["extra"]
    assert len(extra["per_tenth_per_s"]) == len(extra["table_mib_per_tenth"]) == 10
    assert all(rate > 0 for rate in extra["per_tenth_per_s"])
    assert extra["worker_rss_mib_early"] > 0 and extra["worker_rss_mib_late"] > 0


def test_the_executor_case_compares_executors(tmp_path: Path) -> None:
    report = run_bench(f"sqlite:///{tmp_path / 'bench.db'}", "executors")
    results = by_case(report)
    assert set(results) == {
        "cpu-bound, process (2 children)",
        "cpu-bound, threads",
        "cpu-bound, asyncio",
        "no-op job, process executor",
    }
    for name in ("cpu-bound, threads", "cpu-bound, asyncio"):
        extra = results[name]["extra"]
        assert len(extra["span_s_per_round"]) == 5
        low, high = extra["process_speedup_range"]
        assert 0 < low <= extra["process_speedup"] <= high, name
        assert extra["bare_two_process_speedup"] > 0, name
    overhead = results["no-op job, process executor"]["extra"]
    low, high = overhead["overhead_ms_range"]
    assert low <= overhead["overhead_ms_per_job"] <= high
    assert overhead["asyncio_per_s"] > 0
