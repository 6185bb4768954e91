"""Traces leave a real `jobq serve` over OTLP/HTTP, configured by the standard OTEL_*
variables alone, and arrive at a receiver process on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from .processes import jobq_serve, otlp_receiver, wait_for


def test_spans_are_exported_over_otlp_http(tmp_path: Path) -> None:
    received = tmp_path / "spans.jsonl"
    received.touch()

    def spans() -> list[dict[str, Any]]:
        return [json.loads(line) for line in received.read_text().splitlines()]

    with otlp_receiver(received) as endpoint:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "jobq-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export soon, not every 5 s
        }
        with jobq_serve(f"sqlite:///{tmp_path / 'jobq.db'}", tmp_path / "serve.log", **env) as base:
            created = httpx.post(
                f"{base}/jobs", json={"kind": "summarize_text", "queue": "default"}, timeout=10
            )
            assert created.status_code == 201, created.text
            job = created.json()
            assert job["trace_id"] is not None

            def arrived() -> bool:
                names = {s["name"] for s in spans() if s["trace_id"] == job["trace_id"]}
                return {"POST /jobs", "send default", "process default"} <= names

            wait_for(arrived, "the job's spans at the receiver")

    mine = [s for s in spans() if s["trace_id"] == job["trace_id"]]
    assert {s["service"] for s in mine} == {"jobq-under-test"}
    names = [s["name"] for s in mine]
    for name in ("POST /jobs", "send default"):  # one request span: none made twice
        assert names.count(name) == 1, names
    by_name = {s["name"]: s for s in mine}
    assert by_name["send default"]["parent_span_id"] == by_name["POST /jobs"]["span_id"]
    process = by_name["process default"]
    assert process["parent_span_id"] == by_name["send default"]["span_id"]
    assert process["attributes"]["messaging.system"] == "jobq"
    assert process["attributes"]["messaging.message.id"] == str(job["id"])
