"""Settings: the one place configuration is read (env prefix ``JOBQ_``, ``.env`` supported).

Every setting is documented in ``.env.example`` and the README; ``tests/unit/test_config.py``
checks that the three agree.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .worker.weights import parse_queues


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JOBQ_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- storage ---
    database_url: str = Field(
        "sqlite:///./jobq.db",
        description="postgresql://user@host/db or sqlite:///path/to/file.db",
    )
    pool_min_size: int = Field(1, ge=0, description="PostgreSQL pool: connections kept open")
    pool_max_size: int = Field(10, ge=1, description="PostgreSQL pool: most connections")
    pool_timeout_s: float = Field(
        5.0, gt=0, description="How long to wait for a free pooled connection before failing"
    )
    poll_only: bool = Field(
        False,
        description=(
            "For a transaction pooler such as PgBouncer: never LISTEN, only poll; no"
            " server-side prepared statements nor session settings"
        ),
    )
    claim_async_commit: bool = Field(
        False,
        description=(
            "PostgreSQL: commit claims without waiting for their WAL flush (lower latency;"
            " a database crash can forget the last claims, whose jobs then run again)"
        ),
    )
    read_database_url: str = Field(
        "",
        description=(
            "PostgreSQL streaming replica for lists, counts, stats and event polls"
            " (empty: the primary serves them)"
        ),
    )
    replica_max_lag_s: float = Field(
        5.0, gt=0, description="Reads go to the primary while the replica is further behind"
    )
    sqlite_busy_timeout_ms: int = Field(
        10_000, ge=0, description="SQLite: how long a writer waits for the file lock"
    )

    # --- worker ---
    concurrency: int = Field(10, ge=1, le=10_000, description="Jobs one worker runs at once")
    queues: str = Field(
        "",
        description="Comma-separated queues a worker serves, by strict priority across them "
        "(a,b), or with weights for proportional claims (a:6,b:3,c:1); empty = all",
    )
    tenant_fairness: bool = Field(
        False,
        description="Workers serve tenants round-robin instead of strictly by priority",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="Idle workers look for due jobs at least this often"
    )
    lease_s: float = Field(
        30.0, gt=0, description="A worker silent this long is presumed dead; its jobs rescued"
    )
    heartbeat_s: float = Field(5.0, gt=0, description="How often a worker proves it is alive")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight jobs may take to finish"
    )
    completion_flush_s: float = Field(
        0.005, ge=0, description="Most time a finished job waits to be written in a batch"
    )
    completion_batch_size: int = Field(
        500, ge=1, description="Most completions written in one statement"
    )
    executor: Literal["thread", "process"] = Field(
        "thread",
        description="Where sync tasks that name no executor run: thread (the worker's threads) "
        "or process (child processes); coroutine tasks run on the event loop unless they "
        "name one",
    )
    process_pool_size: int = Field(
        0, ge=0, le=1024, description="Child processes for process-executor tasks (0 = CPUs)"
    )
    process_max_jobs_per_child: int = Field(
        0, ge=0, description="A child process is replaced after this many jobs (0 = never)"
    )
    process_memory_limit_mb: int = Field(
        0,
        ge=0,
        description="Default memory limit of a process-executor task: the MB a job may grow "
        "its child by (0 = no limit)",
    )
    process_cancel_grace_s: float = Field(
        5.0,
        ge=0,
        description="A cancelled process-executor task that does not stop this long after the "
        "request is killed",
    )

    retention: timedelta = Field(
        timedelta(days=7),
        description="Succeeded and cancelled jobs are deleted this long after they finish "
        "(seconds, or ISO 8601 like P7D)",
    )
    failed_retention: timedelta = Field(
        timedelta(days=30),
        description="Failed (dead-letter) jobs are deleted this long after they finish",
    )
    vacuum_dead_rows: int = Field(
        50_000,
        ge=0,
        description="PostgreSQL: the maintenance leader VACUUMs the jobs table once this many "
        "more dead row versions wait in it than its last VACUUM left (0: never)",
    )

    # --- default retry policy for tasks that set none ---
    max_attempts: int = Field(5, ge=1, le=1000, description="Default attempts per job")
    retry_base_s: float = Field(1.0, ge=0, description="Default backoff floor (seconds)")
    retry_cap_s: float = Field(300.0, ge=0, description="Default backoff ceiling (seconds)")

    # --- demo kinds ---
    simulated_time_scale: float = Field(
        1.0, ge=0, description="Multiplier on the demo kinds' step durations (0 = no sleeping)"
    )

    # --- HTTP API ---
    api_host: str = Field("127.0.0.1", description="Address the HTTP API listens on")
    api_port: int = Field(8000, ge=0, le=65535, description="Port the HTTP API listens on")
    idempotency_ttl_s: float = Field(
        86_400.0, gt=0, description="How long an Idempotency-Key names its job (seconds)"
    )
    max_payload_bytes: int = Field(
        262_144, ge=1, description="Largest job payload accepted, as JSON bytes"
    )
    max_request_bytes: int = Field(
        1_048_576, ge=1, description="Largest request body for POST /jobs and other endpoints"
    )
    max_bulk_bytes: int = Field(
        10_485_760, ge=1, description="Largest request body for POST /jobs/bulk"
    )
    max_bulk_jobs: int = Field(10_000, ge=1, description="Most jobs in one POST /jobs/bulk")
    max_queue_depth: int = Field(
        0, ge=0, description="Waiting jobs per queue before POST /jobs answers 429 (0 = no limit)"
    )
    tenant_max_queued: int = Field(
        0,
        ge=0,
        description="Queued jobs one tenant may hold; more is refused (HTTP 429) (0 = no limit)",
    )
    rate_limit_per_s: float = Field(
        0.0,
        ge=0,
        description="Requests per second per API key (without keys: per X-Client-Id, else "
        "per address) (0 = no limit)",
    )
    rate_limit_burst: int = Field(
        50, ge=1, description="Requests a client may send at once before the rate applies"
    )

    max_result_bytes: int = Field(
        1_048_576,
        ge=1,
        description="Largest job result stored, as JSON bytes; a larger one fails its job",
    )
    max_list_bytes: int = Field(
        8_388_608,
        ge=1,
        description="Most payload and result bytes one page of GET /jobs or /dlq carries "
        "with ?include=payload (the page ends early, with a cursor, past it)",
    )
    tenant_enqueue_per_s: float = Field(
        0.0,
        ge=0,
        description="Jobs per second one tenant may enqueue, with bursts of 10 seconds' "
        "worth; more is refused (HTTP 429) (0 = no limit)",
    )
    tenant_payload_bytes_per_s: float = Field(
        0.0,
        ge=0,
        description="Payload bytes per second one tenant may enqueue, with bursts of 10 "
        "seconds' worth; more is refused (HTTP 429) (0 = no limit)",
    )
    max_event_streams: int = Field(
        200, ge=1, description="Open GET /jobs/{id}/events streams per API process (503 past it)"
    )
    max_event_streams_per_client: int = Field(
        20,
        ge=1,
        description="Open event streams per API key (or client, without keys) (429 past it)",
    )
    body_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body must arrive whole within this many seconds (else 408)",
    )

    # --- security ---
    auth_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long an API process trusts what it read of a key: a revocation "
        "or a first key takes up to this long to apply",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated Host names the API answers (* = any); empty = the "
        "loopback names when JOBQ_API_HOST is a loopback address, else any",
    )
    allowed_origins: str = Field(
        "",
        description="Comma-separated browser origins (https://ops.example.com) allowed to "
        "call the API, with CORS; empty = only pages the API serves itself",
    )

    # --- logging ---
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_json: bool | None = Field(
        None,
        description="JSON log lines (true) or human-readable console text (false); "
        "unset or empty = console text on a terminal, JSON otherwise",
    )
    log_jobs: bool = Field(
        False, description="One INFO line per finished job (off: only at DEBUG level)"
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("postgresql://", "postgres://", "sqlite://")):
            scheme = url.partition("://")[0] if "://" in url else ""
            given = f", not {scheme}://" if scheme else ""  # the scheme only: URLs hold passwords
            raise ValueError(
                "database_url must start with postgresql://, postgres:// or sqlite:/// "
                f"(jobq stores its jobs in PostgreSQL or SQLite){given}"
            )
        return url

    @field_validator("read_database_url")
    @classmethod
    def _replica_is_postgres(cls, url: str) -> str:
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("read_database_url must be a postgresql:// URL (or empty)")
        return url

    @field_validator("retention", "failed_retention", mode="before")
    @classmethod
    def _seconds_or_iso(cls, value: object) -> object:
        """Accept plain seconds ("3600") as well as ISO 8601 durations ("P7D")."""
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @field_validator("log_json", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``JOBQ_LOG_JSON=`` (as .env.example has it) decides by the terminal, as unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        level = level.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("queues")
    @classmethod
    def _queue_spec(cls, spec: str) -> str:
        parse_queues(spec)  # a bad weight is refused at start-up, with its reason
        return spec

    @property
    def queue_list(self) -> list[str] | None:
        """The queues' names (weighted or not)."""
        return parse_queues(self.queues)[0]

    @property
    def queue_weights(self) -> dict[str, int] | None:
        """``{queue: weight}`` when the queues were given with weights (a:6,b:3), else None."""
        return parse_queues(self.queues)[1]

    @property
    def cancel_poll_s(self) -> float:
        """How often a worker's heartbeat loop ticks, looking for cancel requests."""
        return min(0.5, self.heartbeat_s)

    @property
    def allowed_host_names(self) -> frozenset[str] | None:
        """The Host names to answer; None: any."""
        names = {h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()}
        if "*" in names:
            return None
        if names:
            return frozenset(names)
        return LOOPBACK_NAMES if is_loopback(self.api_host) else None

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
