"""The claim planner: which due jobs a worker may start when limits or tenant fairness are
on. The plain claim (no limits, no fairness) is one statement each driver runs itself.

Limited work is claimed first, under the cluster-wide "limits" lock: counting what runs and
claiming more must not interleave with another worker doing the same. Then tenants' shares
(round-robin over tenants), then the rest in plain claim order. The whole plan runs in one
transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..model import Job
from ..storage.base import ClaimLimits, ClaimParams
from ..storage.plans import Lock, Plan, Run


class TenantCursor:
    """For fair claiming: the last tenant each worker of this process served."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def after(self, worker_id: str) -> str:
        return self._last.get(worker_id, "")

    def served(self, worker_id: str, last: str) -> None:
        self._last[worker_id] = last


def shares(free: int, tenants: Sequence[str]) -> list[int]:
    """``free`` slots split as evenly as can be over ``tenants`` (the first get the rest)."""
    each, rest = divmod(free, len(tenants))
    return [each + (1 if i < rest else 0) for i in range(len(tenants))]


def room_under_limits(
    limits: ClaimLimits,
    running_by_kind: Mapping[str, int],
    running_by_queue: Mapping[str, int],
    recent_starts_by_kind: Mapping[str, int],
) -> tuple[dict[str, int], dict[str, int]]:
    """How many more jobs of each limited kind, and in each limited queue, may start now."""
    kind_room: dict[str, int] = {}
    for kind in limits.kinds:
        room = sys.maxsize
        if kind in limits.max_running_by_kind:
            room = limits.max_running_by_kind[kind] - running_by_kind.get(kind, 0)
        if kind in limits.rate_by_kind:
            rate = limits.rate_by_kind[kind]
            room = min(room, rate.starts - recent_starts_by_kind.get(kind, 0))
        kind_room[kind] = max(0, room)
    queue_room = {
        queue: max(0, most - running_by_queue.get(queue, 0))
        for queue, most in limits.max_running_by_queue.items()
    }
    return kind_room, queue_room


def pick_within_limits(
    candidates: Iterable[tuple[int, str, str]],
    free: int,
    kind_room: dict[str, int],
    queue_room: dict[str, int],
) -> list[int]:
    """From (id, kind, queue) candidates in claim order, the ids that fit: at most ``free``,
    and no limited kind or queue past its room. Spends the room it hands out."""
    picked: list[int] = []
    for job_id, kind, queue in candidates:
        if len(picked) >= free:
            break
        if kind_room.get(kind, 1) <= 0 or queue_room.get(queue, 1) <= 0:
            continue
        picked.append(job_id)
        if kind in kind_room:
            kind_room[kind] -= 1
        if queue in queue_room:
            queue_room[queue] -= 1
    return picked


def claim_with_flow_control(params: ClaimParams, cursor: TenantCursor) -> Plan[list[Job]]:
    """The claim when limits or tenant fairness are on: limited work first, then tenants'
    shares, then the rest in plain order."""
    limits = params.limits or ClaimLimits()
    base: dict[str, Any] = {
        "worker_id": params.worker_id,
        "queues": list(params.queues) if params.queues is not None else None,
        "skip_kinds": limits.kinds,
        "skip_queues": limits.queues,
    }
    jobs: list[Job] = []
    if limits:
        jobs += yield from _claim_limited(params, limits)
    if params.fair_tenants and len(jobs) < params.limit:
        jobs += yield from _claim_fair(params, base, params.limit - len(jobs), cursor)
    if len(jobs) < params.limit:
        args = {**base, "limit": params.limit - len(jobs), "tenantless": params.fair_tenants}
        jobs += yield Run("claim_filtered", args, jobs=True)
    return jobs


def _claim_fair(
    params: ClaimParams, base: dict[str, Any], free: int, cursor: TenantCursor
) -> Plan[list[Job]]:
    """Round-robin over tenants: the next ``free`` tenants after the last one this worker
    served (wrapping around), an equal share of the free slots each."""
    after = cursor.after(params.worker_id)
    tenants: list[str] = []
    for start in (after, ""):  # from the cursor to the end, then from the start
        found = yield Run("claim_tenants", {**base, "after": start, "most": free - len(tenants)})
        tenants += [row[0] for row in found if row[0] not in tenants]
        if len(tenants) >= free or not start:
            break
    if not tenants:
        return []
    cursor.served(params.worker_id, tenants[-1] if len(tenants) >= free else "")
    portions = shares(free, tenants)
    args = {**base, "tenants": tenants, "shares": portions, "most_share": max(portions)}
    claimed: list[Job] = yield Run("claim_fair", args, jobs=True)
    return claimed


def _claim_limited(params: ClaimParams, limits: ClaimLimits) -> Plan[list[Job]]:
    kinds, queues = limits.kinds, limits.queues
    rated_kinds = list(limits.rate_by_kind)
    windows = {
        "kinds": rated_kinds,
        "windows": [limits.rate_by_kind[kind].per_s for kind in rated_kinds],
    }
    yield Lock("limits")
    by_kind: dict[str, int] = {}
    by_queue: dict[str, int] = {}
    for kind, queue, count in (yield Run("running_counts", {"kinds": kinds, "queues": queues})):
        by_kind[kind] = by_kind.get(kind, 0) + count
        by_queue[queue] = by_queue.get(queue, 0) + count
    starts: dict[str, int] = {}
    if limits.rate_by_kind:
        yield Run("prune_starts", windows)
        starts = {kind: count for kind, count in (yield Run("recent_starts", windows))}
    kind_room, queue_room = room_under_limits(limits, by_kind, by_queue, starts)
    full_kinds = [k for k, room in kind_room.items() if room <= 0]
    full_queues = [q for q, room in queue_room.items() if room <= 0]
    if len(full_kinds) == len(kinds) and len(full_queues) == len(queues):
        return []
    candidates = yield Run(
        "limited_candidates",
        {
            "queues": list(params.queues) if params.queues is not None else None,
            "limited_kinds": kinds,
            "limited_queues": queues,
            "full_kinds": full_kinds,
            "full_queues": full_queues,
            # Enough to fill the free slots even when some candidates do not fit.
            "limit": params.limit * 4,
        },
    )
    ids = pick_within_limits(
        [(row[0], row[1], row[2]) for row in candidates], params.limit, kind_room, queue_room
    )
    if not ids:
        return []
    jobs: list[Job] = yield Run("claim_ids", {"worker_id": params.worker_id, "ids": ids}, jobs=True)
    rated = [job.kind for job in jobs if job.kind in limits.rate_by_kind]
    if rated:
        yield Run("record_starts", {"kinds": rated})
    return jobs
