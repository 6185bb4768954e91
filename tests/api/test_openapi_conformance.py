"""schemathesis against the served spec (/api-docs/openapi.json) of a real `jobq api`
process with auth on (an admin key sent on every request): generated requests for every
operation, positive and negative; no 5xx, and every response (errors included) must
match the spec, with every check schemathesis has.

schemathesis' pytest plugin does not run under this pytest version, so each operation's
Hypothesis strategy is driven directly; the checks are schemathesis' own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from jobq import JobQueue

from ..conftest import migrated_sqlite, run_async
from .live import live_api

# Every operation the spec must contain; a new route shows up here or the test says so.
OPERATIONS = [
    "GET /dlq",
    "GET /health",
    "GET /jobs",
    "GET /jobs/{job_id}",
    "GET /jobs/{job_id}/errors",
    "GET /jobs/{job_id}/events",
    "GET /metrics",
    "GET /queues",
    "GET /ready",
    "GET /workers",
    "POST /dlq/requeue",
    "POST /jobs",
    "POST /jobs/bulk",
    "POST /jobs/{job_id}/cancel",
    "POST /jobs/{job_id}/retry",
    "POST /queues/{queue}/pause",
    "POST /queues/{queue}/resume",
]


# GET /jobs/{job_id}/events streams until its job finishes or timeout_s passes (default 300 s,
# up to 3600), and no worker runs here. Most generated ids are unknown (an instant 404), but
# one can name a queued job that POST /jobs cases created (job_id=1 is among the first values
# tried). So each case's timeout_s is capped at STREAM_BOUND_S (set when absent; smaller
# values and non-numbers are sent as generated): 30 cases take a few seconds at worst, and a
# stream that does open is still checked, event by event, against the spec.
STREAM_BOUND_S = 0.2


def bound_the_stream(case: Any) -> None:
    query = dict(case.query or {})
    value = query.get("timeout_s")
    if value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and value > STREAM_BOUND_S
    ):
        query["timeout_s"] = STREAM_BOUND_S
    case.query = query


ADJUSTED = {"GET /jobs/{job_id}/events": bound_the_stream}

# POST /jobs answers a schema-valid request 422 in two documented cases the schema cannot
# express: an Idempotency-Key reused for another body (as the IETF draft asks), and
# depends_on naming a job that does not exist; generated cases hit both (keys are drawn
# from few short strings, parent ids at random). Every check still runs on every case.
CONFIG = SchemathesisConfig.from_str(
    """
[[operations]]
include-name = "POST /jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""
)
# Operations with no input at all: nothing to make a negative case of.
NO_INPUT = {"GET /health", "GET /ready"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of a served API whose database holds a key: auth is on."""
    url = migrated_sqlite(Path(tmp_path_factory.mktemp("spec")) / "jobq.db")

    async def make_key() -> str:
        jq = JobQueue(url)
        try:
            return (await jq.create_api_key(tenant=None, scopes=["admin"]))[1]
        finally:
            await jq.close()

    key = run_async(make_key)
    with live_api(url) as (base, _process):
        yield base, key


@pytest.fixture(scope="module")
def base_url(api: tuple[str, str]) -> str:
    return api[0]


@pytest.fixture(scope="module")
def operations(api: tuple[str, str]) -> dict[str, Any]:
    base_url, key = api
    schema = schemathesis.openapi.from_url(f"{base_url}/api-docs/openapi.json", config=CONFIG)

    @schema.auth()
    class AdminKey:
        """The key on every generated request (schemathesis leaves it out, or spoils it,
        where a negative case is about the credentials: those must get 401)."""

        def get(self, case: Any, context: Any) -> str:
            return key

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[operation.label] = operation
    return found


def test_the_spec_lists_every_operation(operations: dict[str, Any]) -> None:
    assert sorted(operations) == OPERATIONS


@pytest.mark.parametrize(
    ("label", "mode"),
    [
        (label, mode)
        for label in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (label in NO_INPUT and mode is GenerationMode.NEGATIVE)
    ],
)
def test_operation_conforms_to_the_spec(
    label: str, mode: GenerationMode, operations: dict[str, Any], api: tuple[str, str]
) -> None:
    operation = operations[label]
    base_url = api[0]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if label in ADJUSTED:
            ADJUSTED[label](case)
        case.call_and_validate(base_url=base_url)

    check()


def test_every_phase_of_the_schemathesis_cli(api: tuple[str, str], tmp_path: Path) -> None:
    """The CLI's phases beyond generated cases: coverage (boundary values of every
    parameter), fuzzing, and stateful sequences that feed one answer's ids into the next
    request; all checks. The event stream is left to the test above, which bounds its
    timeout_s (the CLI would hold each stream open for up to 300 s)."""
    base_url, key = api
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[[operations]]\ninclude-name = "POST /jobs"\n'
        "checks.positive_data_acceptance.expected-statuses = "
        '["2xx", "401", "403", "404", "409", "422"]\n'
    )
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{base_url}/api-docs/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "30",
            "--exclude-path-regex",
            "/events$",
            "--seed",
            "1",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-6000:]
    assert "No issues found" in completed.stdout
