"""JobQueue: the task registry and the front door to the queue's storage."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, cast, overload

from .access import Access
from .config import Settings
from .errors import (
    ConfigurationError,
    InvalidJobError,
    JobNotFoundError,
    TenantMismatchError,
)
from .keys import hash_secret, new_key
from .model import ApiKey, Job, JobError, JobStatus, WorkerInfo
from .observability.metrics import Metrics
from .periodic import DEFAULT_MAX_LATENESS, PeriodicDecorator, Schedule
from .retry import RetryPolicy
from .storage import connect
from .storage.base import (
    DEFAULT_QUEUE,
    CancelResult,
    ClaimLimits,
    Driver,
    ListParams,
    NewJob,
    QueueStat,
    RateLimit,
)
from .storage.common import refuse_unstorable_job
from .storage.sqlfiles import load_migrations
from .task import (
    AsyncTaskFunction,
    DeferOptions,
    SyncTaskFunction,
    Task,
    TaskDecorator,
    TaskFunction,
)

if TYPE_CHECKING:
    from .worker.runtime import Worker

P = ParamSpec("P")
R = TypeVar("R")


def _found(job_id: int, job: Job | None) -> Job:
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


class EnqueueOptions(TypedDict, total=False):
    """What ``enqueue`` and ``enqueue_sync`` take besides kind and payload (see new_job)."""

    queue: str | None
    priority: int | None
    run_at: datetime | None
    delay: float | None
    max_attempts: int | None
    idempotency_key: str | None
    unique_key: str | None
    unique_states: Sequence[JobStatus | str]
    depends_on: Sequence[int]
    tenant: str | None
    request_id: str | None


class JobQueue:
    """One queue database and the tasks this program knows.

    ``JobQueue("postgresql://localhost/app")`` or ``JobQueue("sqlite:///jobq.db")``; with no
    URL, ``JOBQ_DATABASE_URL`` (default ``sqlite:///./jobq.db``).
    """

    def __init__(self, database_url: str | None = None, *, settings: Settings | None = None):
        base = settings or Settings()
        if database_url is not None:
            base = base.model_copy(update={"database_url": database_url})
            Settings.model_validate(base.model_dump())  # same checks as the environment gets
        self.settings = base
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: list[Schedule] = []  # see periodic()
        self.queue_limits: dict[str, int] = {}  # see limit_queue()
        self._driver: Driver | None = None
        self._driver_lock = threading.Lock()  # synchronous producers may start in any thread

    # ------------------------------------------------------------------ storage
    @property
    def driver(self) -> Driver:
        if self._driver is None:
            with self._driver_lock:
                if self._driver is None:
                    self._driver = connect(self.settings.database_url, self.settings)
        return self._driver

    async def migrate(self) -> list[int]:
        return await self.driver.migrate()

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    async def __aenter__(self) -> JobQueue:
        await self.driver.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def close_sync(self) -> None:
        """Close the connections the ``*_sync`` methods opened (``close`` closes them too)."""
        if self._driver is not None:
            self._driver.close_sync()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    # ------------------------------------------------------------------ tasks
    @overload
    def task(self, func: AsyncTaskFunction[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, func: SyncTaskFunction[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        retry_base: float | None = None,
        retry_cap: float | None = None,
        max_running: int | None = None,
        rate_limit: tuple[int, float] | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        retry_base: float | None = None,
        retry_cap: float | None = None,
        max_running: int | None = None,
        rate_limit: tuple[int, float] | None = None,
    ) -> Any:
        """Register a function as a task. Its first parameter receives the JobContext; the
        others come from the job's payload. Sync functions run in a thread pool.

        ``max_running``: at most this many of its jobs run at once, across every worker
        process. ``rate_limit=(n, seconds)``: at most n of its jobs start in any window of
        that many seconds, across every worker. Workers enforce both when claiming, so every
        worker must declare the same limits (they read them from this registry)."""

        def register(fn: TaskFunction[P, R]) -> Task[P, R]:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise ConfigurationError(f"a task named {task_name!r} is already registered")
            if max_running is not None and max_running < 1:
                raise ConfigurationError(f"{task_name}: max_running must be at least 1")
            if rate_limit is not None and (rate_limit[0] < 1 or rate_limit[1] <= 0):
                raise ConfigurationError(
                    f"{task_name}: rate_limit is (starts >= 1, seconds > 0), got {rate_limit}"
                )
            policy = RetryPolicy(
                max_attempts=max_attempts or self.settings.max_attempts,
                base_s=self.settings.retry_base_s if retry_base is None else retry_base,
                cap_s=self.settings.retry_cap_s if retry_cap is None else retry_cap,
                retry_for=retry_for,
            )
            registered: Task[P, R] = Task(
                self,
                fn,
                name=task_name,
                retry=policy,
                timeout_s=timeout,
                defaults=DeferOptions(queue=queue, priority=priority),
                max_running=max_running,
                rate_limit=RateLimit(*rate_limit) if rate_limit is not None else None,
            )
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else cast(TaskDecorator, register)

    def periodic(
        self,
        cron: str,
        *,
        name: str | None = None,
        payload: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_lateness: timedelta | float = DEFAULT_MAX_LATENESS,
        tz: str | tzinfo | None = None,
    ) -> PeriodicDecorator:
        """Run a task on a cron schedule: every worker enqueues its job at each tick, and
        the tick's idempotency key makes that one job however many workers run.

        On a function, registers it as a task named ``name`` (default: the function's name)
        and schedules it; on a Task (``@jq.periodic(...)`` above ``@jq.task(...)``, to set
        task options), schedules that task under the schedule name ``name`` (default: the
        task's name; a task may have several schedules with different names). Returns the
        Task, which can still be deferred by hand.

        ``cron``: five fields, or six with seconds last (``"* * * * * */10"``), or an alias
        like ``@hourly``; read in UTC unless ``tz`` (e.g. ``"Europe/Paris"``) is given.
        ``payload`` is given to the task at every tick; if the function has a ``tick``
        parameter (or ``**kwargs``), it also receives the tick time, UTC ISO 8601
        (``"2024-05-01T12:05:00+00:00"``). The job's ``run_at`` is the tick; ``queue`` and
        ``priority`` default to the task's.

        Missed ticks (no worker running): when workers start, only the most recent missed
        tick is enqueued, and only if it is at most ``max_lateness`` old (a timedelta or
        seconds; default one hour); older ones are skipped, never run as a burst.
        Burst workers (``--burst``) do not schedule.
        """

        def register(target: Any) -> Task[Any, Any]:
            if isinstance(target, Task):
                if target.jobq is not self:
                    raise ConfigurationError(f"{target.name!r} is a task of another JobQueue")
                task, schedule_name = target, name or target.name
            else:
                schedule_name = name or target.__name__
                task = None
            if any(s.name == schedule_name for s in self.schedules):
                raise ConfigurationError(f"a schedule named {schedule_name!r} already exists")
            options: dict[str, Any] = {
                "payload": payload,
                "queue": queue,
                "priority": priority,
                "max_lateness": max_lateness,
                "tz": tz,
            }
            if task is None:
                task = self.task(name=schedule_name)(target)
                try:
                    schedule = Schedule.for_task(task, cron, **options)
                except BaseException:
                    del self.tasks[task.name]  # a bad schedule registers nothing
                    raise
            else:
                schedule = Schedule.for_task(task, cron, name=schedule_name, **options)
            self.schedules.append(schedule)
            return task

        return cast(PeriodicDecorator, register)

    def limit_queue(self, queue: str, *, max_running: int) -> None:
        """At most ``max_running`` jobs of ``queue`` run at once, across every worker (which
        must all declare it: workers enforce it when claiming)."""
        if max_running < 1:
            raise ConfigurationError(f"queue {queue!r}: max_running must be at least 1")
        self.queue_limits[queue] = max_running

    def claim_limits(self) -> ClaimLimits:
        """The limits this program's workers enforce: from tasks and ``limit_queue``."""
        return ClaimLimits(
            max_running_by_kind={
                n: t.max_running for n, t in self.tasks.items() if t.max_running is not None
            },
            max_running_by_queue=dict(self.queue_limits),
            rate_by_kind={
                n: t.rate_limit for n, t in self.tasks.items() if t.rate_limit is not None
            },
        )

    # ------------------------------------------------------------------ producing
    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Enqueue by task name, for callers that do not import the task (HTTP, CLI). A
        registered task supplies the defaults (queue, priority, attempts, timeout); the
        options are new_job's."""
        new_job = self.new_job(kind, payload, **options)
        return (await self.enqueue_many([new_job], connection=connection))[0]

    def enqueue_sync(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """``enqueue`` for synchronous code; ``connection`` is then a psycopg Connection."""
        new_job = self.new_job(kind, payload, **options)
        return self.enqueue_many_sync([new_job], connection=connection)[0]

    def new_job(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        unique_key: str | None = None,
        unique_states: Sequence[JobStatus | str] = (),
        depends_on: Sequence[int] = (),
        tenant: str | None = None,
        request_id: str | None = None,
        request_fingerprint: str | None = None,
    ) -> NewJob:
        """The job ``enqueue`` would insert: what is not given comes from the task registered
        under ``kind`` (queue, priority, attempts, timeout), else from the settings."""
        task = self.tasks.get(kind)
        defaults = task.defaults if task else DeferOptions()
        return NewJob(
            kind=kind,
            payload=payload if payload is not None else {},
            queue=defaults.queue if queue is None else queue,
            priority=defaults.priority if priority is None else priority,
            # Resolved only when given: building the options per job showed in bulk profiles.
            run_at=None
            if run_at is None and delay is None
            else DeferOptions(run_at=run_at, delay_s=delay).resolve_run_at(),
            max_attempts=(task.retry.max_attempts if task else self.settings.max_attempts)
            if max_attempts is None
            else max_attempts,
            tenant=tenant,
            idempotency_key=idempotency_key,
            unique_key=unique_key,
            unique_states=tuple(JobStatus(s) for s in unique_states),
            depends_on=tuple(depends_on),
            timeout_s=task.timeout_s if task else None,
            request_id=request_id,
            request_fingerprint=request_fingerprint,
        )

    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """Enqueue many jobs in one round trip (build them with ``task.job(...)``)."""
        return await self.driver.enqueue_many(jobs, connection=connection)

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """``enqueue_many`` for synchronous code: blocks until the jobs are stored. Safe from
        any thread; the first call opens connections of its own (closed by ``close_sync``
        or ``close``). With PostgreSQL, ``connection`` may be your open psycopg Connection
        (sync), and the jobs commit or roll back with your transaction."""
        return self.driver.enqueue_many_sync(jobs, connection=connection)

    async def chain(self, *steps: NewJob | Sequence[NewJob], connection: Any = None) -> list[Job]:
        """Enqueue steps that run one after another: each step (a job, or a group of jobs
        given as a list, see ``group``) waits until every job of the step before has
        succeeded; a failure cancels the rest of the chain. Returns the jobs in order.

        ``await jq.chain(fetch.job(url), jq.group(resize.job(1), resize.job(2)), notify.job())``
        """
        batches = [[s] if isinstance(s, NewJob) else list(s) for s in steps]
        if not all(batches):
            # An empty step would link the next one to nothing: it would not wait at all.
            raise InvalidJobError("each step of a chain needs at least one job")
        for job in (j for batch in batches for j in batch):
            refuse_unstorable_job(job)  # a bad step refuses the chain before any of it is in
        enqueued: list[Job] = []
        previous: tuple[int, ...] = ()
        for batch in batches:
            linked = [replace(j, depends_on=(*j.depends_on, *previous)) for j in batch]
            jobs = await self.enqueue_many(linked, connection=connection)
            enqueued += jobs
            previous = tuple(j.id for j in jobs)
        return enqueued

    @staticmethod
    def group(*jobs: NewJob) -> list[NewJob]:
        """Jobs that form one step of a ``chain`` and run side by side."""
        return list(jobs)

    # ------------------------------------------------------------------ managing
    async def get(self, job_id: int, *, access: Access | None = None) -> Job:
        job = await self.driver.get(job_id)
        return _found(job_id, job) if access is None else access.checked(job, job_id)

    def get_sync(self, job_id: int) -> Job:
        """``get`` for synchronous code (see ``enqueue_many_sync``)."""
        return _found(job_id, self.driver.get_sync(job_id))

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is finished (succeeded, failed or cancelled) and return it;
        TimeoutError after ``timeout`` seconds. Polls, backing off from 20 ms to 0.5 s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.02
        while True:
            job = await self.get(job_id)
            if job.is_terminal:
                return job
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
                await asyncio.sleep(min(pause, remaining))
            else:
                await asyncio.sleep(pause)
            pause = min(0.5, pause * 1.5)

    async def errors(self, job_id: int, *, access: Access | None = None) -> list[JobError]:
        if access is not None:
            await self.get(job_id, access=access)  # another tenant's job: not found
        return await self.driver.job_errors(job_id)

    async def cancel(self, job_id: int, *, access: Access | None = None) -> CancelResult:
        if access is not None and access.tenant is not None:
            await self.get(job_id, access=access)  # a job's tenant never changes
        return await self.driver.cancel(job_id)

    async def requeue(self, job_ids: Sequence[int], *, access: Access | None = None) -> list[int]:
        if access is not None and access.tenant is not None:
            job_ids = await self.driver.tenant_job_ids(job_ids, access.tenant)
        return await self.driver.requeue(job_ids)

    async def stats(self, *, access: Access | None = None) -> list[QueueStat]:
        if access is not None and access.tenant is not None:
            return await self.driver.tenant_stats(access.tenant)
        return await self.driver.stats()

    async def workers(self) -> list[WorkerInfo]:
        return await self.driver.workers()

    # ------------------------------------------------------------------ working
    def worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        metrics: Metrics | None = None,
    ) -> Worker:
        from .worker.runtime import Worker

        return Worker(
            self,
            queues=queues if queues is not None else self.settings.queue_list,
            concurrency=concurrency or self.settings.concurrency,
            burst=burst,
            metrics=metrics,
        )

    async def run_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        handle_signals: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """Run a worker until stopped (or, with ``burst``, until no due work is left)."""
        worker = self.worker(queues=queues, concurrency=concurrency, burst=burst, metrics=metrics)
        if handle_signals:
            worker.install_signal_handlers(asyncio.get_running_loop())
        await worker.run()

    # ------------------------------------------------------------------ tenants and keys
    async def enqueue_for(self, jobs: Sequence[NewJob], access: Access) -> list[Job]:
        """``enqueue_many`` on behalf of a caller: a tenant's jobs are its own (another
        tenant named is refused) and may wait only for its own jobs."""
        self.refuse_foreign(jobs, access)
        if access.tenant is not None:
            parents = sorted({p for job in jobs for p in job.depends_on})
            if parents:
                known = set(await self.driver.tenant_job_ids(parents, access.tenant))
                missing = [p for p in parents if p not in known]
                if missing:
                    raise InvalidJobError(
                        f"depends_on: no job with id {', '.join(map(str, missing))}"
                    )
        return await self.enqueue_many(jobs)

    async def enqueue_ids_for(self, jobs: Sequence[NewJob], access: Access) -> list[int]:
        """``enqueue_for`` answering only the ids of a plain batch (no keys, no parents)."""
        self.refuse_foreign(jobs, access)
        return await self.driver.enqueue_many_ids(jobs)

    @staticmethod
    def refuse_foreign(jobs: Sequence[NewJob], access: Access) -> None:
        if access.tenant is None:
            return
        for job in jobs:
            if job.tenant != access.tenant:
                raise TenantMismatchError(f"this key acts for tenant {access.tenant!r} only")

    async def find(self, job_id: int, *, access: Access | None = None) -> Job | None:
        """The job, or None when it does not exist (or is another tenant's)."""
        job = await self.driver.get(job_id)
        return job if job is not None and (access is None or access.owns(job)) else None

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        return await self.driver.get_by_idempotency_key(key)

    async def list_page(
        self, params: ListParams, *, access: Access | None = None, lean: bool = False
    ) -> list[Job]:
        """Jobs matching ``params``, newest first; ``lean``: without payloads and results
        (read as ``{}`` and None), so that a page's size does not depend on what jobs carry."""
        if access is not None and access.tenant is not None:
            params = replace(params, tenant=access.tenant)
        if lean:
            return await self.driver.list_jobs_lean(params)
        return await self.driver.list_jobs(params)

    async def queue_depth(self, queue: str, at_most: int) -> int:
        return await self.driver.queue_depth(queue, at_most)

    async def forget_idempotency_keys(self, older_than_s: float) -> int:
        return await self.driver.forget_idempotency_keys(older_than_s)

    async def open(self) -> None:
        """Open the database connections (they also open on first use)."""
        await self.driver.open()

    async def ping(self) -> None:
        await self.driver.ping()

    async def schema_versions(self) -> tuple[int, int]:
        """(the database's schema version, the newest this code knows)."""
        applied = await self.driver.applied_migrations()
        return max(applied, default=0), len(load_migrations(self.driver.dialect))

    async def applied_migrations(self) -> list[int]:
        return await self.driver.applied_migrations()

    async def rollback(self, steps: int = 1) -> list[int]:
        return await self.driver.rollback(steps)

    async def create_api_key(
        self,
        *,
        tenant: str | None,
        scopes: Sequence[str],
        name: str | None = None,
        expires_in: timedelta | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown this once: only its hash is kept."""
        key_id, secret, token = new_key()
        expires_at = None if expires_in is None else datetime.now(UTC) + expires_in
        row = ApiKey(
            id=key_id,
            name=name,
            tenant=tenant,
            scopes=tuple(scopes),
            secret_hash=hash_secret(secret),
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
        )
        return await self.driver.insert_api_key(row), token

    async def api_key(self, key_id: str) -> ApiKey | None:
        return await self.driver.get_api_key(key_id)

    async def api_keys(self) -> list[ApiKey]:
        return await self.driver.list_api_keys()

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self.driver.revoke_api_key(key_id)

    async def touch_api_keys(self, key_ids: Sequence[str]) -> None:
        await self.driver.touch_api_keys(key_ids)

    async def any_api_key(self) -> bool:
        return await self.driver.any_api_key()

    # Defined last: inside the class body, later annotations would read "list" as this method.
    async def list(
        self,
        *,
        status: JobStatus | Sequence[JobStatus] | None = None,
        kind: str | None = None,
        queue: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        statuses = [status] if isinstance(status, JobStatus | str) else status
        return await self.driver.list_jobs(
            ListParams(
                statuses=[JobStatus(s) for s in statuses] if statuses else None,
                kind=kind,
                queue=queue,
                before_id=before_id,
                limit=limit,
            )
        )
