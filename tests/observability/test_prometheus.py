"""The Prometheus side, with Debian's own binaries: the rules pass `promtool check rules` and
their unit tests, the example configuration is valid, and a real Prometheus scraping a
running `jobq serve` gets the queue-depth and time-in-queue series (and the exemplars that
lead from a slow observation to its trace)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..worker.processes import REPO
from .processes import jobq_serve, prometheus, wait_for

RULES = REPO / "deploy" / "prometheus"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus package (prometheus, promtool); .ci/run installs it",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=120
    )


@needs_prometheus
def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", "jobq.rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "jobq.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_prometheus
def test_prometheus_scrapes_queue_depth_and_time_in_queue(tmp_path: Path) -> None:
    env = {
        "JOBQ_QUEUES": "served",  # the worker leaves "parked" alone: its jobs stay due
        # Tracing on (spans printed to the discarded stdout) so the histograms get exemplars.
        "OTEL_TRACES_EXPORTER": "console",
    }
    db_url = f"sqlite:///{tmp_path / 'jobq.db'}"
    with jobq_serve(db_url, tmp_path / "serve.log", **env) as base:
        for queue, count in (("parked", 3), ("served", 2)):
            for _ in range(count):
                body = {"kind": "summarize_text", "queue": queue}
                assert httpx.post(f"{base}/jobs", json=body, timeout=10).status_code == 201
        target = base.removeprefix("http://")
        config = f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: jobq
    static_configs:
      - targets: ["{target}"]
"""
        started = time.time()
        with prometheus(config, tmp_path) as server:

            def query(promql: str) -> list[dict[str, Any]]:
                answer = httpx.get(f"{server}/api/v1/query", params={"query": promql}, timeout=5)
                answer.raise_for_status()
                result: list[dict[str, Any]] = answer.json()["data"]["result"]
                return result

            depth = wait_for(lambda: query('jobq_queue_depth{queue="parked"} == 3'), "depth")
            assert isinstance(depth, list) and depth[0]["metric"]["job"] == "jobq"
            waits = wait_for(
                lambda: query('jobq_job_queue_time_seconds_count{kind="summarize_text"} >= 2'),
                "time-in-queue observations",
            )
            assert isinstance(waits, list) and len(waits) == 1
            oldest = query('jobq_queue_oldest_wait_seconds{queue="parked"}')
            assert len(oldest) == 1 and float(oldest[0]["value"][1]) >= 0

            def exemplars() -> list[dict[str, Any]]:
                answer = httpx.get(
                    f"{server}/api/v1/query_exemplars",
                    params={
                        "query": "jobq_job_queue_time_seconds_bucket",
                        "start": str(started - 60),
                        "end": str(time.time() + 60),
                    },
                    timeout=5,
                )
                answer.raise_for_status()
                found: list[dict[str, Any]] = answer.json()["data"]
                return found

            series = wait_for(exemplars, "exemplars")
            assert isinstance(series, list)
            trace_ids = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
            assert trace_ids and all(len(t) == 32 for t in trace_ids)
