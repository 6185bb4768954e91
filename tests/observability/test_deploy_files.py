"""deploy/: the rules and the dashboard only use series jobq exports or the rules record, and
every alert has a unit test (promtool runs them in test_prometheus.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from jobq.observability.metrics import Metrics

from ..worker.processes import REPO

DEPLOY = REPO / "deploy"
SERIES = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "jobq.rules.yml").read_text())
    return loaded


def series_in(expr: str) -> set[str]:
    return {name for name in SERIES.findall(expr) if "jobq" in name}


def test_rules_use_only_series_that_exist() -> None:
    groups = rules()["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    known = exported() | recorded
    for group in groups:
        for rule in group["rules"]:
            unknown = series_in(rule["expr"]) - known
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "JobqQueueDepthGrowing",
        "JobqOldestWaitingTooOld",
        "JobqFailureRatioHigh",
        "JobqNoWorkerHeartbeat",
        "JobqDeadLettersGrowing",
    } <= alerts
    tests = yaml.safe_load((DEPLOY / "prometheus" / "jobq.rules.test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]  # a test that shows it firing, not only staying quiet
    }
    assert alerts == tested


def test_dashboard_uses_only_series_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "jobq.json").read_text())
    recorded = {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}
    known = exported() | recorded
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        assert not series_in(expr) - known, expr
