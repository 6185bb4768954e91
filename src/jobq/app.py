"""JobQueue: the task registry and the front door to the queue's storage."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, cast, overload

import orjson
import pydantic

from . import rollup
from .access import Access
from .batching import GroupCommit, shares_an_insert
from .config import Settings
from .errors import (
    ConfigurationError,
    InvalidJobError,
    InvalidTransitionError,
    JobNotFoundError,
    TenantMismatchError,
)
from .keys import hash_secret, new_key
from .maintenance import Maintenance, holder_id
from .model import ApiKey, Job, JobError, JobStatus, WorkerInfo
from .observability import tracing
from .observability.metrics import Metrics
from .periodic import DEFAULT_MAX_LATENESS, PeriodicDecorator, Schedule
from .registry import TaskRegistry
from .replica import ReadDriver, ReadRouter
from .retry import RetryPolicy
from .storage import connect
from .storage.base import (
    BACKLOG_CAP,
    DEFAULT_QUEUE,
    Backlog,
    CancelResult,
    ClaimLimits,
    Driver,
    Enqueued,
    FinishedSample,
    ListParams,
    NewJob,
    QueueStat,
    RateLimit,
    StatusCount,
)
from .storage.common import refuse_unstorable_job
from .storage.sqlfiles import load_migrations
from .task import (
    EXECUTORS,
    AsyncTaskFunction,
    DeferOptions,
    Executor,
    SyncTaskFunction,
    Task,
    TaskDecorator,
    TaskFunction,
)
from .worker.runtime import Worker
from .worker.services import WorkerServices
from .worker.weights import parse_queues

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .observability.tracing import JobTracer

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _checked_settings(make: Callable[[], Settings]) -> Settings:
    """Settings as ``make`` builds them (from the environment, or with a URL given in code),
    a mistake refused as a ConfigurationError that names the setting."""
    try:
        return make()
    except pydantic.ValidationError as exc:
        problems = "; ".join(_named(e["loc"], str(e["msg"])) for e in exc.errors())
        raise ConfigurationError(problems) from None


def _named(loc: tuple[int | str, ...], message: str) -> str:
    """A setting's error, led by the setting's name (once, if the message has it already)."""
    name = ".".join(str(p) for p in loc) or "settings"
    message = message.removeprefix("Value error, ")
    return message if message.startswith(f"{name} ") else f"{name}: {message}"


def job_fingerprint(job: NewJob) -> str:
    """Digest of what a keyed request asks for, to tell a replay of its idempotency key
    from a reuse of the key for another job. Its time (run_at, a delay) is left out: a
    retried call computes it anew."""
    asked = {
        "kind": job.kind,
        "payload": job.payload,
        "queue": job.queue,
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "tenant": job.tenant,
        "unique_key": job.unique_key,
        "unique_states": sorted(str(s) for s in job.unique_states),
        "depends_on": list(job.depends_on),
    }
    try:
        encoded = orjson.dumps(asked, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InvalidJobError(f"payload is not JSON-serializable: {exc}") from exc
    return hashlib.sha256(encoded).hexdigest()


def _found(job_id: int, job: Job | None) -> Job:
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


def _queue_name(queue: str) -> str:
    if not 1 <= len(queue) <= 128 or "\x00" in queue:
        raise InvalidJobError("a queue name is 1 to 128 characters, without NUL")
    return queue


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
        base = settings or _checked_settings(Settings)
        if database_url is not None:
            base = base.model_copy(update={"database_url": database_url})
            _checked_settings(lambda: Settings.model_validate(base.model_dump()))
        self.settings = base
        self.registry = TaskRegistry()  # see task(), periodic() and limit_queue()
        self._driver: Driver | None = None
        self._driver_lock = threading.Lock()  # synchronous producers may start in any thread
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()  # see worker_states
        self._tracer: JobTracer | None = None
        self._tracer_resolved = False  # see the tracer property
        self._reads: ReadRouter | None = None  # with JOBQ_READ_DATABASE_URL (see replica.py)
        self._group: GroupCommit | None = None  # see _shared_insert

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks by name."""
        return self.registry.tasks

    @property
    def schedules(self) -> list[Schedule]:
        """The periodic schedules (see ``periodic``)."""
        return self.registry.schedules

    @property
    def queue_limits(self) -> dict[str, int]:
        """Queues' ``max_running`` (see ``limit_queue``)."""
        return self.registry.queue_limits

    # ------------------------------------------------------------------ storage
    @property
    def driver(self) -> Driver:
        if self._driver is None:
            with self._driver_lock:
                if self._driver is None:
                    self._driver = connect(self.settings.database_url, self.settings)
        return self._driver

    def use_database(self, database_url: str) -> None:
        """Point this JobQueue at another database, before it has opened any connection
        (the CLI's ``--database-url`` over an app's own)."""
        if self._driver is not None:
            raise ConfigurationError("already connected to its database; cannot switch it")
        base = self.settings.model_copy(update={"database_url": database_url})
        _checked_settings(lambda: Settings.model_validate(base.model_dump()))
        self.settings = base

    async def open(self) -> None:
        """Open the connections now rather than on first use (``async with`` does this)."""
        await self.driver.open()

    async def migrate(self) -> list[int]:
        """Apply the pending migrations; the versions applied."""
        return await self.driver.migrate()

    async def rollback(self, steps: int = 1) -> list[int]:
        """Undo the newest ``steps`` migrations; the versions undone."""
        return await self.driver.rollback(steps)

    async def applied_migrations(self) -> list[int]:
        return await self.driver.applied_migrations()

    async def schema_versions(self) -> tuple[int, int]:
        """The database's schema version and the newest this jobq knows (0: none applied)."""
        applied = await self.applied_migrations()
        return max(applied, default=0), len(load_migrations(self.driver.dialect))

    async def ping(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers."""
        await self.driver.ping()

    async def close(self) -> None:
        """Wait for the enqueues in progress (see batching.py), then close the connections."""
        group = self._group
        if group is not None and group.loop is asyncio.get_running_loop():
            await group.close()  # calls arriving meanwhile still join it, and are waited for
        self._group = None
        if self._reads is not None:
            await self._reads.close()
            self._reads = None
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
        executor: Executor | None = None,
        memory_limit_mb: int | None = None,
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
        executor: Executor | None = None,
        memory_limit_mb: int | None = None,
    ) -> Any:
        """Register a function as a task. Its first parameter receives the JobContext; the
        others come from the job's payload. Sync functions run in a thread pool.

        ``max_running``: at most this many of its jobs run at once, across every worker
        process. ``rate_limit=(n, seconds)``: at most n of its jobs start in any window of
        that many seconds, across every worker. Workers enforce both when claiming, so every
        worker must declare the same limits (they read them from this registry).

        ``executor``: where the function runs (docs/executors.md). ``"async"``: on the
        worker's event loop (coroutine functions' default); ``"thread"``: a thread of the
        worker (sync functions' default, unless ``JOBQ_EXECUTOR=process``); ``"process"``:
        a child process, killed at ``timeout`` and isolated from the worker's crashes, with
        ``memory_limit_mb`` (default ``JOBQ_PROCESS_MEMORY_LIMIT_MB``) the most its child
        may grow by. A process task must be defined at the top level of an importable
        module."""

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
            if executor is not None and executor not in EXECUTORS:
                raise ConfigurationError(
                    f"{task_name}: executor must be one of {', '.join(EXECUTORS)}"
                )
            if memory_limit_mb is not None and memory_limit_mb < 1:
                raise ConfigurationError(f"{task_name}: memory_limit_mb must be at least 1")
            if memory_limit_mb is not None and executor in ("async", "thread"):
                raise ConfigurationError(
                    f"{task_name}: memory_limit_mb applies to executor='process' only"
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
                executor=executor,
                memory_limit_mb=memory_limit_mb,
            )
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else cast(TaskDecorator, register)

    @property
    def knows_its_kinds(self) -> bool:
        """Whether enqueueing by name refuses a kind no task is registered for (see
        TaskRegistry.knows_its_kinds)."""
        return self.registry.knows_its_kinds

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
        return self.registry.claim_limits()

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
        task = self.registry.checked(kind, payload if payload is not None else {})
        defaults = task.defaults if task else DeferOptions()
        job = NewJob(
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
        if idempotency_key is not None and request_fingerprint is None:
            job = replace(job, request_fingerprint=job_fingerprint(job))
        return job

    async def submit(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """Enqueue jobs and say what became of each, in request order: ``created``, or no
        new job because its idempotency key was ``replayed`` (the same job asked again) or
        ``key_reused`` (the key names a different job), or its ``unique_key_held`` by an
        active job. ``Enqueued.job`` is the job that answers the request either way.
        With tracing on, the enqueue is a span whose context every job carries.

        One job without ``connection``, from concurrent callers, shares an INSERT with the
        others' (group commit, see batching.py) unless a check that could refuse it alone
        applies (parents, a tenant quota); each caller still gets its own answer or error."""
        if connection is None and len(jobs) == 1 and shares_an_insert(jobs[0], self.settings):
            return [await self._shared_insert(jobs[0])]
        tracer = self._tracer_for(jobs)
        if tracer is None:
            answers = await self.driver.enqueue(jobs, connection=connection)
        else:
            with tracer.enqueuing(jobs) as sending:
                answers = await self.driver.enqueue(sending.jobs, connection=connection)
                sending.record([a.job.id for a in answers])
        self._wrote()
        return answers

    async def _shared_insert(self, job: NewJob) -> Enqueued:
        refuse_unstorable_job(job)  # its own error: a bad job must not fail its neighbours
        group = self._group
        if group is None or group.loop is not asyncio.get_running_loop():
            group = self._group = GroupCommit(self._insert_shared)
        tracer = self._tracer_for([job])
        if tracer is None:
            answer = await group.enqueue(job)
        else:
            with tracer.enqueuing([job]) as sending:  # a span per call, as without batching
                answer = await group.enqueue(sending.jobs[0])
                sending.record([answer.job.id])
        self._wrote()
        return answer

    async def _insert_shared(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        return await self.driver.enqueue(jobs)

    def submit_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """``submit`` for synchronous code (see ``enqueue_many_sync``)."""
        tracer = self._tracer_for(jobs)
        if tracer is None:
            answers = self.driver.enqueue_sync(jobs, connection=connection)
        else:
            with tracer.enqueuing(jobs) as sending:
                answers = self.driver.enqueue_sync(sending.jobs, connection=connection)
                sending.record([a.job.id for a in answers])
        self._wrote()
        return answers

    def _tracer_for(self, jobs: Sequence[NewJob]) -> JobTracer | None:
        """The tracer an enqueue of ``jobs`` opens its span with: none when tracing is off,
        or when every job already carries its enqueuer's context (an HTTP request's span,
        the batch it shares an insert with being no operation of its own)."""
        tracer = self.tracer
        if tracer is None or all(job.trace_context for job in jobs):
            return None
        return tracer

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        """The ids ``enqueue_many`` would return the jobs of, without building each Job of
        a batch without keys or parents (the fastest way to load many jobs)."""
        tracer = self._tracer_for(jobs)
        if tracer is None:
            ids = await self.driver.enqueue_many_ids(jobs)
        else:
            with tracer.enqueuing(jobs) as sending:
                ids = await self.driver.enqueue_many_ids(sending.jobs)
                sending.record(ids)
        self._wrote()
        return ids

    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """Enqueue many jobs in one round trip (build them with ``task.job(...)``); the job
        answering each (see ``submit`` for what became of each). Kinds and arguments are
        checked when a job is built (``task.job``, ``new_job``), once; a NewJob made by
        hand is taken as it is."""
        return [answer.job for answer in await self.submit(jobs, connection=connection)]

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """``enqueue_many`` for synchronous code: blocks until the jobs are stored. Safe from
        any thread; the first call opens connections of its own (closed by ``close_sync``
        or ``close``). With PostgreSQL, ``connection`` may be your open psycopg Connection
        (sync), and the jobs commit or roll back with your transaction."""
        return [answer.job for answer in self.submit_sync(jobs, connection=connection)]

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
        """The job; JobNotFoundError when there is none, or when ``access`` (a caller's
        key) may not see it: another tenant's job does not exist for it."""
        job = await self._read(lambda d: d.get(job_id))
        return _found(job_id, job) if access is None else access.checked(job, job_id)

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        """The job enqueued with this idempotency key, while the key is kept (read from
        the primary: it decides whether a request is a replay)."""
        return await self.driver.get_by_idempotency_key(key)

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
        return await self._read(lambda d: d.job_errors(job_id))

    async def cancel(self, job_id: int, *, access: Access | None = None) -> CancelResult:
        if access is not None and access.tenant is not None:
            await self.get(job_id, access=access)  # a job's tenant never changes
        result = await self.driver.cancel(job_id)
        self._wrote()
        return result

    async def requeue(self, job_ids: Sequence[int], *, access: Access | None = None) -> list[int]:
        """Failed or cancelled jobs go back to queued, attempts reset (their history kept);
        the ids that did (others, and other tenants' jobs, are left as they are)."""
        requeued = await self.driver.requeue(await self._own_ids(job_ids, access))
        self._wrote()
        return requeued

    async def retry(self, job_id: int, *, access: Access | None = None) -> Job:
        """Run a failed or cancelled job again (attempts reset, history kept); the job as
        it is now. JobNotFoundError, or InvalidTransitionError for a job in another status."""
        await self.get(job_id, access=access)
        if not await self.requeue([job_id]):
            current = await self.get(job_id)
            raise InvalidTransitionError(
                f"job {job_id} is {current.status}; only failed or cancelled jobs"
            )
        return await self.get(job_id)

    async def stats(self, *, access: Access | None = None) -> list[QueueStat]:
        """Jobs by queue and status (of the tenant ``access`` acts for, if one)."""
        if access is not None and access.tenant is not None:
            tenant = access.tenant
            return await self._read(lambda d: d.tenant_stats(tenant))
        return await self._read(lambda d: d.stats())

    async def queue_depth(self, queue: str, at_most: int) -> int:
        """Jobs waiting in ``queue``, counted up to ``at_most`` (bounded cost)."""
        return await self.driver.queue_depth(queue, at_most)

    async def workers(self) -> list[WorkerInfo]:
        return await self._read(lambda d: d.workers())

    async def find(self, job_id: int, *, access: Access | None = None) -> Job | None:
        """The job, or None if there is none with this id (or ``access`` may not see it)."""
        job = await self._read(lambda d: d.get(job_id))
        return job if job is not None and (access is None or access.owns(job)) else None

    async def list_jobs(
        self, params: ListParams, *, access: Access | None = None, lean: bool = False
    ) -> list[Job]:
        """Jobs matching every filter of ``params``, newest first (keyset pagination): what
        ``list`` takes as keywords. ``access``: only its tenant's jobs. ``lean``: without
        payloads and results (read as ``{}`` and None), so that a page's size does not
        depend on what its jobs carry."""
        if access is not None and access.tenant is not None:
            params = replace(params, tenant=access.tenant)
        if lean:
            return await self._read(lambda d: d.list_jobs_lean(params))
        return await self._read(lambda d: d.list_jobs(params))

    # ------------------------------------------------------------------ tenants and keys
    async def submit_for(self, jobs: Sequence[NewJob], access: Access) -> list[Enqueued]:
        """``submit`` on behalf of a caller: a tenant's jobs are its own (another tenant
        named is refused) and may wait only for its own jobs."""
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
        return await self.submit(jobs)

    async def enqueue_ids_for(self, jobs: Sequence[NewJob], access: Access) -> list[int]:
        """``submit_for`` answering only the ids of a plain batch (no keys, no parents)."""
        self.refuse_foreign(jobs, access)
        return await self.enqueue_many_ids(jobs)

    @staticmethod
    def refuse_foreign(jobs: Sequence[NewJob], access: Access) -> None:
        """TenantMismatchError unless every job is of the tenant ``access`` acts for."""
        if access.tenant is None:
            return
        for job in jobs:
            if job.tenant != access.tenant:
                raise TenantMismatchError(f"this key acts for tenant {access.tenant!r} only")

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

    # ------------------------------------------------------------------ read routing
    @property
    def read_router(self) -> ReadRouter | None:
        """The replica's router when ``JOBQ_READ_DATABASE_URL`` is set (else None)."""
        if self._reads is None and self.settings.read_database_url:
            if self.driver.dialect != "postgres":
                raise ConfigurationError("a read replica needs a PostgreSQL database_url")
            replica = connect(self.settings.read_database_url, self.settings)
            self._reads = ReadRouter(
                cast(ReadDriver, self.driver),
                cast(ReadDriver, replica),
                max_lag_s=self.settings.replica_max_lag_s,
            )
        return self._reads

    async def _read(self, operation: Callable[[Driver], Awaitable[T]]) -> T:
        router = self.read_router
        return await (operation(self.driver) if router is None else router.read(operation))

    def _wrote(self) -> None:
        router = self.read_router
        if router is not None:
            router.wrote()

    async def worker_states(self) -> list[WorkerInfo]:
        """The registered workers, with what only a running worker knows (its stuck
        threads) filled in for the workers this process runs (``jobq serve``, an app that
        runs its worker beside the API); None for workers of other processes."""
        local = {w.id: w for w in self._workers}
        return [
            replace(w, stuck_threads=local[w.id].stuck_threads) if w.id in local else w
            for w in await self.workers()
        ]

    async def dependents(self, job_id: int) -> list[int]:
        """Ids of the jobs waiting for (or released by) this one, at most 100."""
        return await self._read(lambda d: d.dependents_of(job_id))

    async def pause_queue(self, queue: str) -> bool:
        """Workers claim no more jobs of ``queue`` (running ones finish) until it is resumed;
        True when it was not paused yet. Workers in other processes stop within a moment: at
        once on PostgreSQL (a notification), and on SQLite at their next wake-up or poll."""
        return await self.driver.set_queue_paused(_queue_name(queue), True)

    async def resume_queue(self, queue: str) -> bool:
        """Workers claim jobs of ``queue`` again; True when it was paused."""
        return await self.driver.set_queue_paused(_queue_name(queue), False)

    async def paused_queues(self) -> dict[str, datetime]:
        return await self.driver.paused_queues()

    async def waiting_queues(self) -> list[str]:
        """Queues with jobs waiting to be claimed."""
        return await self.driver.waiting_queues()

    async def counts_by_queue(self, statuses: Sequence[JobStatus], cap: int) -> list[StatusCount]:
        """Jobs by queue for each status, reading at most ``cap`` jobs of a status (whose
        counts are then lower bounds): bounded however large the table grows."""
        counts: list[StatusCount] = []
        for status in statuses:
            counts += await self.driver.status_by_queue(JobStatus(status), cap)
        return counts

    async def finished_counts(
        self, since: datetime, bucket_s: int, now: datetime
    ) -> rollup.FinishedCounts:
        """Jobs finished since ``since`` by bucket of ``bucket_s`` seconds (a multiple of
        60), from the per-minute summary and a live count of the latest minutes."""
        return await rollup.finished_counts(self.driver, since, bucket_s, now)

    async def roll_up_finished(self) -> bool:
        """Summarize the minutes closed since the last summary (the maintenance leader does,
        see rollup.py); True when more is left."""
        return await rollup.roll_up(self.driver)

    async def finished_sample(
        self, since: datetime, bucket_s: int, per_bucket: int
    ) -> list[FinishedSample]:
        """Timings of up to ``per_bucket`` of the latest jobs that succeeded in each bucket
        of ``bucket_s`` seconds since ``since``: a bounded sample however busy the queue."""
        return await self.driver.finished_sample(since, bucket_s, per_bucket)

    async def running_by_worker(self) -> dict[str, int]:
        return await self.driver.running_by_worker()

    async def discard(self, job_ids: Sequence[int], *, access: Access | None = None) -> list[int]:
        """Delete dead letters (failed jobs; others, and other tenants' jobs, are left
        alone) with their history; the ids deleted."""
        return await self.driver.discard_failed(await self._own_ids(job_ids, access))

    async def _own_ids(self, job_ids: Sequence[int], access: Access | None) -> Sequence[int]:
        """The ids of ``job_ids`` that ``access`` may act on."""
        if access is None or access.tenant is None or not job_ids:
            return job_ids
        return await self.driver.tenant_job_ids(job_ids, access.tenant)

    async def backlog(self, *, at_most: int = BACKLOG_CAP) -> Backlog:
        """Per queue, the jobs due and waiting and how long the oldest of them has waited,
        and the age of the newest worker heartbeat: what the metrics endpoint exports. Cheap
        at any size: each queue's count stops at ``at_most`` (see Backlog)."""
        return await self.driver.backlog(at_most)

    # ------------------------------------------------------------------ tracing
    @property
    def tracer(self) -> JobTracer | None:
        """The OpenTelemetry tracer of this queue's spans, or None when tracing is off (see
        observability/tracing.py). Decided on first use, so that a TracerProvider the
        application installs after creating the JobQueue, but before enqueueing or starting
        a worker, is the one used."""
        if not self._tracer_resolved:
            self._tracer = tracing.resolve()
            self._tracer_resolved = True
        return self._tracer

    def use_tracer_provider(self, provider: TracerProvider | None) -> None:
        """Trace with this provider instead of the global one (None: tracing off). Call it
        before starting workers or the API: they read the tracer when they start."""
        self._tracer = tracing.JobTracer(provider) if provider is not None else None
        self._tracer_resolved = True

    # ------------------------------------------------------------------ working
    def maintenance(self, holder: str | None = None) -> Maintenance:
        """This process's part in the queue's housekeeping (rescue, retention, idempotency
        keys' expiry, VACUUM, statistics), done by whichever process holds the lease. Every
        worker runs one; ``jobq api`` runs one too."""
        return Maintenance(self.driver, self.settings, holder or holder_id("api-"))

    def worker(
        self,
        *,
        queues: Sequence[str] | Mapping[str, int] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        metrics: Metrics | None = None,
    ) -> Worker:
        if isinstance(queues, str):  # "a,b" or "a:6,b:3", as on the command line
            names, weights = parse_queues(queues)
            queues = weights or names
        services = WorkerServices(
            settings=self.settings,
            driver=self.driver,
            registry=self.registry,
            tracer=self.tracer,
            enqueue=self.enqueue_many,
        )
        worker = Worker(
            services,
            queues=queues if queues is not None else self._configured_queues(),
            concurrency=concurrency or self.settings.concurrency,
            burst=burst,
            metrics=metrics,
        )
        self._workers.add(worker)
        return worker

    async def run_worker(
        self,
        *,
        queues: Sequence[str] | Mapping[str, int] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        handle_signals: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """Run a worker until stopped (or, with ``burst``, until no due work is left).

        ``queues``: a list serves them by strict priority across them (as one
        pool); a mapping ``{"critical": 6, "default": 3, "low": 1}`` claims from them in
        proportion to the weights while each has work; a string is read as ``--queues``
        is (``"a,b"`` or ``"a:6,b:3"``). None: ``JOBQ_QUEUES`` (empty: every queue)."""
        worker = self.worker(queues=queues, concurrency=concurrency, burst=burst, metrics=metrics)
        if handle_signals:
            worker.install_signal_handlers(asyncio.get_running_loop())
        await worker.run()

    def _configured_queues(self) -> list[str] | dict[str, int] | None:
        """JOBQ_QUEUES as the worker takes it: weights when given, else the names."""
        return self.settings.queue_weights or self.settings.queue_list

    # Defined last: inside the class body, later annotations would read "list" as this method.
    async def list(
        self,
        *,
        status: JobStatus | Sequence[JobStatus] | None = None,
        kind: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first; ``before_id`` pages (pass the last id of the page before)."""
        statuses = [status] if isinstance(status, JobStatus | str) else status
        return await self.list_jobs(
            ListParams(
                statuses=[JobStatus(s) for s in statuses] if statuses else None,
                kind=kind,
                queue=queue,
                tenant=tenant,
                created_after=created_after,
                created_before=created_before,
                before_id=before_id,
                limit=limit,
            )
        )
