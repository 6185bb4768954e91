"""`jobq bench --cases hosts` at a tiny N keeps working (its figures are for
docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobq.bench.hosts import unavailable

from ..pg_server import PgServer

pytestmark = pytest.mark.netns


def test_hosts_case_measures_every_step(pg_server: PgServer) -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(f"multi-host bench skipped: {why}")
    command = [sys.executable, "-m", "jobq.cli", "bench", "--database-url", pg_server.admin_url]
    command += ["--cases", "hosts", "--jobs", "400", "--rounds", "1", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {r["case"]: r for r in json.loads(completed.stdout)["results"]}
    steps = [
        f"hosts: {mode}, {k} worker host(s)"
        for mode in ("drain", "end to end, 2 API hosts")
        for k in (1, 2, 3)
    ]
    assert set(results) == {*steps, "hosts: leader failover"}
    for name in steps:
        (step,) = results[name]["extra"]["rounds"]
        assert step["jobs"] >= 400 and step["jobs_per_s"] > 0, name
        assert step["db_cpu_us_per_job"] > 0 and step["wal_bytes_per_job"] > 0, name
    assert results["hosts: leader failover"]["extra"]["failovers_s"][0] > 0
    assert "| drain | 3 |" in completed.stderr  # the Markdown table for the docs
