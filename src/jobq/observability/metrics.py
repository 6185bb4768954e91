"""Prometheus metrics. One registry per process object (no module-level globals), shared by
the API and the worker when both run in one process (``jobq serve``)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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

        # Label values allowed for kinds and queues (None: any); see bound_labels.
        self.kinds: frozenset[str] | None = None
        self.queues: frozenset[str] | None = None

    def kind_label(self, kind: str) -> str:
        return kind if self.kinds is None or kind in self.kinds else OTHER

    def queue_label(self, queue: str) -> str:
        return queue if self.queues is None or queue in self.queues else OTHER

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
            cumulative, buckets = 0, []
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(values), buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)


class LoopHistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one counts values above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "<=").
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value
