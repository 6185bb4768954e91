"""Per-tenant enqueue quotas: jobs a second and payload bytes a second, as token buckets
holding 10 seconds' worth. Per API process, like the request rate limit; the queued-jobs
quota (JOBQ_TENANT_MAX_QUEUED) is the database's, and holds across processes."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from ..config import Settings
from .limits import Bucket
from .problems import ProblemError

BURST_S = 10.0
MAX_TENANTS = 10_000


class CostBuckets:
    """Token buckets by name where a request takes ``cost`` tokens at once."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, name: str, cost: float) -> float:
        """0 when ``cost`` tokens were taken, else the seconds until they would be there
        (nothing is taken then)."""
        now = self.clock()
        bucket = self._buckets.pop(name, None) or Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[name] = bucket
        while len(self._buckets) > MAX_TENANTS:
            self._buckets.popitem(last=False)
        if cost <= bucket.tokens:
            bucket.tokens -= cost
            return 0.0
        return (min(cost, self.capacity) - bucket.tokens) / self.rate


class TenantQuotas:
    def __init__(self, settings: Settings) -> None:
        jobs = settings.tenant_enqueue_per_s
        payload = settings.tenant_payload_bytes_per_s
        self.jobs = CostBuckets(jobs, max(1.0, jobs * BURST_S)) if jobs > 0 else None
        # At least one largest payload fits, so that any valid job can get through.
        capacity = max(float(settings.max_payload_bytes), payload * BURST_S)
        self.payload = CostBuckets(payload, capacity) if payload > 0 else None

    def charge(self, tenant: str | None, jobs: int, payload_bytes: int) -> None:
        """Take a request's jobs and payload bytes from its tenant's quotas, or refuse it
        (429, Retry-After) taking nothing. Jobs without a tenant are not counted."""
        if tenant is None or jobs == 0:
            return
        wait_jobs = self.jobs.take(tenant, jobs) if self.jobs else 0.0
        if wait_jobs:
            raise _over(tenant, "jobs per second (JOBQ_TENANT_ENQUEUE_PER_S)", wait_jobs)
        wait_bytes = self.payload.take(tenant, payload_bytes) if self.payload else 0.0
        if wait_bytes:
            if self.jobs is not None:
                self.jobs.take(tenant, -jobs)  # refund: the request is refused whole
            raise _over(
                tenant, "payload bytes per second (JOBQ_TENANT_PAYLOAD_BYTES_PER_S)", wait_bytes
            )

    def charge_each(self, by_tenant: Mapping[str | None, tuple[int, int]]) -> None:
        """``charge`` for a bulk request: {tenant: (jobs, payload bytes)}; a refusal takes
        nothing from any tenant (what was taken before it is given back)."""
        charged: list[tuple[str | None, int, int]] = []
        try:
            for tenant, (jobs, payload_bytes) in by_tenant.items():
                self.charge(tenant, jobs, payload_bytes)
                charged.append((tenant, jobs, payload_bytes))
        except ProblemError:
            for tenant, jobs, payload_bytes in charged:
                self.charge(tenant, -jobs, -payload_bytes)
            raise


def _over(tenant: str, what: str, wait_s: float) -> ProblemError:
    retry = max(1, math.ceil(wait_s))
    return ProblemError(
        429,
        "Tenant quota reached",
        f"tenant {tenant!r} is over its {what}; retry after {retry} s",
        headers={"Retry-After": str(retry)},
    )
