"""Prometheus metrics. One registry per process object (no module-level globals), shared by
the API and the worker when both run in one process (``jobq serve``)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from ..storage.base import BACKLOG_CAP, Backlog

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# How prometheus_client writes a bucket's bound ("1.0", "+Inf"); its module has no types.
_bound_label = cast(Callable[[float], str], floatToGoString)

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
        self.job_duration = LoopHistogram(
            "jobq_worker_job_duration_seconds",
            "Time a job's task ran",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_wait = LoopHistogram(
            "jobq_worker_job_wait_seconds",
            "Time from a job being due to it starting",
            ["queue"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("jobq_worker_jobs_in_flight", "Jobs running now", registry=r)
        self.stuck_threads = Gauge(
            "jobq_worker_stuck_threads",
            "Threads of sync tasks still running past their job's timeout (slots held)",
            registry=r,
        )
        self.threads_stuck = Counter(
            "jobq_worker_threads_stuck",
            "Sync tasks whose thread kept running past the job's timeout",
            registry=r,
        )
        self.children_replaced = Counter(
            "jobq_worker_children_replaced",
            "Child processes of the process executor replaced, by reason",
            ["reason"],
            registry=r,
        )
        # --- per kind, for the SLOs (label values: the kinds this process runs) ---
        self.job_queue_time = LoopHistogram(
            "jobq_job_queue_time_seconds",
            "Time in queue: from a job being due (enqueued, or its run_at or retry time) to "
            "an attempt starting",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_attempts = Counter(
            "jobq_job_attempts_total", "Attempts started", ["kind"], registry=r
        )
        self.job_retries = Counter(
            "jobq_job_retries_total", "Failed attempts that will be retried", ["kind"], registry=r
        )
        self.job_dead_letters = Counter(
            "jobq_job_dead_letters_total",
            "Jobs that failed for good (into the dead-letter set)",
            ["kind"],
            registry=r,
        )
        self.slots = Gauge(
            "jobq_worker_slots", "Job slots (concurrency) of this worker", registry=r
        )
        self.slots_busy = Gauge("jobq_worker_slots_busy", "Job slots running a job now", registry=r)
        # --- the queue as the database sees it, read at each scrape of the API ---
        self.queue_depth = Gauge(
            "jobq_queue_depth",
            f"Jobs due and not started, per queue (a count stops at {BACKLOG_CAP})",
            ["queue"],
            registry=r,
        )
        self.queue_oldest_wait = Gauge(
            "jobq_queue_oldest_wait_seconds",
            "How long the oldest due job of the queue has waited to start",
            ["queue"],
            registry=r,
        )
        self.workers_registered = Gauge(
            "jobq_workers_registered", "Workers registered in the database", registry=r
        )
        self.worker_heartbeat_age = Gauge(
            "jobq_worker_heartbeat_age_seconds",
            "Seconds since the newest heartbeat of any worker (+Inf with no worker registered)",
            registry=r,
        )
        # --- read replica ---
        self.replica_fallbacks = Counter(
            "jobq_replica_fallbacks_total",
            "Reads meant for the read replica served by the primary, by reason "
            "(down, lagging, behind_own_writes)",
            ["reason"],
            registry=r,
        )

        # Label values allowed for kinds and queues (None: any); see bound_labels.
        self.kinds: frozenset[str] | None = None
        self.queues: frozenset[str] | None = None

    def kind_label(self, kind: str) -> str:
        return kind if self.kinds is None or kind in self.kinds else OTHER

    def queue_label(self, queue: str) -> str:
        return queue if self.queues is None or queue in self.queues else OTHER

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition a scraper asked for: OpenMetrics (which carries the exemplars'
        trace ids) when its Accept header names it, else Prometheus text."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def set_backlog(self, backlog: Backlog) -> None:
        """The database's view of the queues, replacing the last one (a queue that emptied
        drops out instead of keeping its last value)."""
        self.queue_depth.clear()
        self.queue_oldest_wait.clear()
        for queue in backlog.queues:
            self.queue_depth.labels(queue.queue).set(queue.due)
            self.queue_oldest_wait.labels(queue.queue).set(queue.oldest_wait_s)
        self.workers_registered.set(backlog.workers)
        age = backlog.newest_heartbeat_age_s
        self.worker_heartbeat_age.set(float("inf") if age is None else age)


# The label of every kind and queue this program does not know: each label value is a
# series kept for the life of the process, and names come from clients.
OTHER = "other"


class _Registry(Protocol):
    @property
    def tasks(self) -> Mapping[str, Any]: ...
    @property
    def queue_limits(self) -> Mapping[str, int]: ...


def bound_labels(metrics: Metrics, jobq: _Registry, queues: Iterable[str] = ()) -> None:
    """Label series only for the kinds registered with ``jobq`` and the queues it names
    (its tasks', its limits', ``queues`` and the default one); others count as "other"."""
    known_queues = {"default", *queues, *jobq.queue_limits}
    known_queues.update(getattr(task.defaults, "queue", "default") for task in jobq.tasks.values())
    metrics.kinds = frozenset(jobq.tasks) | (metrics.kinds or frozenset())
    metrics.queues = frozenset(known_queues) | (metrics.queues or frozenset())


class LoopHistogram(Collector):
    """A labelled histogram for observations made on one event loop, once per job.

    prometheus_client's Histogram takes a lock and walks its buckets for each observation
    (1.3-1.8 µs, measured); here an observation is a bisect and two additions (0.2-0.3 µs), no
    lock: all observations come from the loop's thread, and a scrape from another thread
    copies the counts, so it can at worst miss the observation in progress. Exposed as a
    regular histogram (``_bucket``, ``_count``, ``_sum``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._bounds = sorted(buckets)
        self._le = [_bound_label(b) for b in [*self._bounds, float("inf")]]
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopHistogramChild:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopHistogramChild(self._bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum
            exemplars = list(child.exemplars) if child.exemplars else [None] * len(counts)
            cumulative = 0
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
                cumulative += count
                buckets.append((le, cumulative) if exemplar is None else (le, cumulative, exemplar))
            family.add_metric(list(values), buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)


class LoopHistogramChild:
    __slots__ = ("_bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one counts values above every bound
        self.sum = 0.0
        # Each bucket's latest traced observation; made on the first one (tracing on).
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "<=").
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_traced(self, value: float, trace_id: str) -> None:
        """``observe``, keeping the observation as its bucket's exemplar (OpenMetrics)."""
        bucket = bisect_left(self._bounds, value)
        self.counts[bucket] += 1
        self.sum += value
        if self.exemplars is None:
            self.exemplars = [None] * len(self.counts)
        self.exemplars[bucket] = Exemplar({"trace_id": trace_id}, value, time.time())
