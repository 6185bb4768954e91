"""Prometheus metrics. One registry per process object (no module-level globals), shared by
the API and the worker when both run in one process (``jobq serve``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # --- API ---
        self.http_requests = Counter(
            "jobq_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "jobq_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs_enqueued = Counter(
            "jobq_jobs_enqueued_total", "Jobs accepted over HTTP", ["queue"], registry=r
        )
        self.idempotent_replays = Counter(
            "jobq_idempotent_replays_total", "Requests answered from an idempotency key", registry=r
        )
        self.rate_limited = Counter(
            "jobq_rate_limited_total", "Requests refused by a rate limit", ["reason"], registry=r
        )
        self.queue_jobs = Gauge(
            "jobq_queue_jobs", "Jobs by queue and status", ["queue", "status"], registry=r
        )
        # --- worker ---
        self.jobs_claimed = Counter(
            "jobq_worker_jobs_claimed_total", "Jobs claimed", ["queue"], registry=r
        )
        self.jobs_finished = Counter(
            "jobq_worker_jobs_finished_total",
            "Jobs finished, by outcome (succeeded, retried, failed, cancelled)",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "jobq_worker_job_duration_seconds",
            "Time a job's task ran",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_wait = Histogram(
            "jobq_worker_job_wait_seconds",
            "Time from a job being due to it starting",
            ["queue"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("jobq_worker_jobs_in_flight", "Jobs running now", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
