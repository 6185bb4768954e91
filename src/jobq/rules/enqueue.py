"""Enqueueing rules: tenant quotas, dependencies, unique keys and idempotency outcomes.

Drivers write the rows (their own statement shapes, COPY and other fast paths); these plans
decide what is checked before the rows go in, what the rows start as, what happens after,
and what each requested job turned out to be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import ContentionError, InvalidJobError, TenantQuotaExceeded
from ..model import Job, JobStatus
from ..storage.base import Enqueued, EnqueueOutcome, NewJob
from ..storage.plans import Lock, Plan, Run

# How often a job skipped for its unique key is inserted again when the key's holder
# finished before the lookup found it (the key is free then); each pass is one more race.
UNIQUE_KEY_PASSES = 3


@dataclass(slots=True)
class Inserted:
    """What an insert produced: the jobs it created and the existing jobs some of its keys
    led to (an idempotency key already used, a unique key held)."""

    created: list[Job] = field(default_factory=list)
    existing: list[Job] = field(default_factory=list)


# Writes rows for ``jobs`` (``waiting[i]``: the job starts as waiting on its parents) and
# gives back the jobs created; a job whose key is held already gets no row.
RowWriter = Callable[[Sequence[NewJob], Sequence[bool]], Plan[list[Job]]]


def check_tenant_quota(jobs: Sequence[NewJob], quota: int | None) -> Plan[None]:
    """Refuse the batch (TenantQuotaExceeded) if it would take a tenant past ``quota``
    queued jobs. Each tenant is locked while counted, in one order for every process."""
    if not quota:
        return
    adding: dict[str, int] = {}
    for job in jobs:
        if job.tenant is not None:
            adding[job.tenant] = adding.get(job.tenant, 0) + 1
    for tenant in sorted(adding):
        yield Lock("tenant", tenant)
        [(queued,)] = yield Run("tenant_queued", {"tenant": tenant})
        if queued + adding[tenant] > quota:
            raise TenantQuotaExceeded(tenant, quota)


@dataclass(frozen=True, slots=True)
class Parents:
    """The dependencies of a batch: which jobs start waiting, and the parents that failed or
    were cancelled (their dependents are cancelled as soon as they are in)."""

    waiting: list[bool]
    dead: dict[int, str]


def prepare_dependents(jobs: Sequence[NewJob]) -> Plan[Parents | None]:
    """Lock and flag the parents (so none finishes unseen before the dependents are in);
    None when no job has dependencies."""
    parents = sorted({p for job in jobs for p in job.depends_on})
    if not parents:
        return None
    found = yield Run("mark_parents", {"ids": parents})
    status_of = {int(row[0]): str(row[1]) for row in found}
    missing = [p for p in parents if p not in status_of]
    if missing:
        raise InvalidJobError(f"depends_on: no job with id {', '.join(map(str, missing))}")
    return Parents(
        waiting=[any(status_of[p] != JobStatus.SUCCEEDED for p in j.depends_on) for j in jobs],
        dead={
            p: status
            for p, status in status_of.items()
            if status in (JobStatus.FAILED, JobStatus.CANCELLED)
        },
    )


def link_dependents(inserted: list[Job], dead: dict[int, str]) -> Plan[list[Job]]:
    """Record who depends on whom; a dependent of a dead parent is cancelled at once."""
    pairs = [(parent, job.id) for job in inserted for parent in job.depends_on]
    yield Run(
        "insert_dependencies",
        {"parents": [p for p, _ in pairs], "jobs": [j for _, j in pairs]},
    )
    settled = []
    for job in inserted:
        failed = [p for p in job.depends_on if p in dead]
        if job.status == JobStatus.WAITING and failed:
            reason = f"dependency {failed[0]} {dead[failed[0]]}"
            [job] = yield Run("cancel_born_orphaned", {"id": job.id, "reason": reason}, jobs=True)
        settled.append(job)
    return settled


def insert_checked(
    jobs: Sequence[NewJob], quota: int | None, write_rows: RowWriter
) -> Plan[Inserted]:
    """Insert jobs that may have keys or parents: the quota, the parents, the rows, the
    dependency links, then the existing jobs the keys led to."""
    yield from check_tenant_quota(jobs, quota)
    parents = yield from prepare_dependents(jobs)
    waiting = parents.waiting if parents is not None else [False] * len(jobs)
    result = Inserted()
    todo = list(range(len(jobs)))
    for _ in range(UNIQUE_KEY_PASSES):
        some = [jobs[i] for i in todo]
        created = yield from write_rows(some, [waiting[i] for i in todo])
        if parents is not None:
            created = yield from link_dependents(created, parents.dead)
        result.created += created
        if len(created) < len(some):
            result.existing += yield from _holders_of_keys(some)
        todo = _skipped_for_a_free_unique_key(jobs, todo, result)
        if not todo:
            break
    return result


def _holders_of_keys(jobs: Sequence[NewJob]) -> Plan[list[Job]]:
    keys = [j.idempotency_key for j in jobs if j.idempotency_key is not None]
    uniques = [j.unique_key for j in jobs if j.unique_key is not None]
    found: list[Job] = []
    if keys:
        found += yield Run("jobs_by_idempotency_keys", {"keys": keys}, jobs=True)
    if uniques:
        found += yield Run("jobs_by_unique_keys", {"keys": uniques}, jobs=True)
    return found


def _skipped_for_a_free_unique_key(
    jobs: Sequence[NewJob], todo: list[int], result: Inserted
) -> list[int]:
    """Jobs skipped for a unique key whose holder finished before the lookup found it: they
    have neither a row nor a holder, and the key is free now."""
    every = (*result.created, *result.existing)
    held = {j.unique_key for j in every if j.unique_key is not None}
    keyed = {j.idempotency_key for j in every if j.idempotency_key}
    return [
        i
        for i in todo
        if jobs[i].unique_key is not None
        and jobs[i].unique_key not in held
        and jobs[i].idempotency_key not in keyed
    ]


def match_inserted(requested: Sequence[NewJob], inserted: Inserted) -> list[Enqueued]:
    """Line up the jobs an insert produced with the order they were requested in, and say
    what became of each request.

    Jobs without keys are all inserted, and their ids grow in request order. A job with an
    idempotency key maps to the row holding that key, new or pre-existing; failing that (its
    insert was skipped for its unique key), a job with a unique key maps to the row holding
    that unique key. The first request of a batch that a new row answers created it; any
    other request answered by a row replayed its idempotency key (or reused it for another
    job, when the request fingerprints differ) or met its unique key held.
    """
    created = sorted(inserted.created, key=lambda j: j.id)
    if not any(j.idempotency_key is not None or j.unique_key is not None for j in requested):
        return all_created(created)  # every request made a row, in request order
    by_key: dict[str, Job] = {}
    by_unique: dict[str, Job] = {}
    for job in [*inserted.existing, *created]:  # a row inserted now wins over an older one
        if job.idempotency_key is not None:
            by_key[job.idempotency_key] = job
        if job.unique_key is not None:
            by_unique.setdefault(job.unique_key, job)
    for job in created:  # within a batch the first insert holds the key
        if job.unique_key is not None and by_unique[job.unique_key].id > job.id:
            by_unique[job.unique_key] = job
    plain = iter([j for j in created if j.idempotency_key is None and j.unique_key is None])
    new_ids = {j.id for j in created}
    answered: set[int] = set()
    result: list[Enqueued] = []
    for asked in requested:
        if asked.idempotency_key is not None and asked.idempotency_key in by_key:
            job = by_key[asked.idempotency_key]
        elif asked.unique_key is not None and asked.unique_key in by_unique:
            job = by_unique[asked.unique_key]
        elif asked.idempotency_key is None and asked.unique_key is None:
            job = next(plain)
        else:  # the row that held the key was gone by the time it was looked up
            raise ContentionError("a conflicting job changed meanwhile; enqueue again")
        new = job.id in new_ids and job.id not in answered
        result.append(Enqueued(job, _outcome(asked, job, new=new)))
        answered.add(job.id)
    return result


def _outcome(asked: NewJob, job: Job, *, new: bool) -> EnqueueOutcome:
    if new:
        return EnqueueOutcome.CREATED
    if asked.idempotency_key is not None and job.idempotency_key == asked.idempotency_key:
        if job.request_fingerprint != asked.request_fingerprint:
            return EnqueueOutcome.KEY_REUSED
        return EnqueueOutcome.REPLAYED
    return EnqueueOutcome.UNIQUE_KEY_HELD


def all_created(jobs: Iterable[Job]) -> list[Enqueued]:
    """Outcomes of an insert that only creates (no keys): every job is new."""
    return [Enqueued(job, EnqueueOutcome.CREATED) for job in jobs]
