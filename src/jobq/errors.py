"""Exceptions users can catch. Everything jobq raises on purpose derives from ``JobqError``."""

from __future__ import annotations

from datetime import datetime


class JobqError(Exception):
    """Base class of every error jobq raises on purpose."""


class ConfigurationError(JobqError):
    """A setting or database URL is invalid."""


class UnknownTaskError(JobqError):
    """A job names a task (kind) that is not registered with the JobQueue that runs it
    (the attempt fails at once: no retry would find it)."""


class InvalidJobError(JobqError, ValueError):
    """Job fields that the queue refuses (bad priority, attempts, payload...)."""


class JobNotFoundError(JobqError, LookupError):
    """No job has that id."""


class InvalidTransitionError(JobqError):
    """The job's current status does not allow the requested change (e.g. retrying a job
    that has not failed)."""


class MigrationError(JobqError):
    """The schema cannot be migrated: a checksum mismatch, a missing file, a failed script."""


class SchemaMissingError(MigrationError):
    """The database has no jobq tables yet: run ``jobq migrate`` (``await jq.migrate()``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the database has no jobq schema yet ({detail}): run `jobq migrate`, "
            "or `await jq.migrate()` from Python"
        )


class DatabaseUnavailableError(JobqError):
    """The database cannot be reached right now; retry later."""


class ContentionError(JobqError):
    """Concurrent changes to the same jobs kept this call from completing. It changed
    nothing, and calling it again is safe."""


class LeaseLostError(JobqError):
    """This worker no longer owns the job (it was presumed dead and the job rescued); work done
    in the job's transaction was rolled back."""


class TenantQuotaExceeded(JobqError):
    """The tenant already holds its quota of queued jobs (JOBQ_TENANT_MAX_QUEUED)."""

    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(
            f"tenant {tenant!r} holds its limit of {limit} queued jobs "
            "(JOBQ_TENANT_MAX_QUEUED); retry once some have run"
        )
        self.tenant = tenant
        self.limit = limit


class TenantMismatchError(JobqError):
    """A caller acting for one tenant named another (enqueueing a job for it)."""


class UnsupportedFeatureError(JobqError):
    """The storage driver in use cannot provide this feature."""


# --- signals a task raises to steer its own retry policy -------------------------------------


class DoNotRetry(JobqError):
    """Raised by a task: fail this job now, whatever attempts remain."""


class RetryAt(JobqError):
    """Raised by a task: retry this job at ``when`` (counts as an attempt)."""

    def __init__(self, when: datetime, message: str = "") -> None:
        super().__init__(message or f"retry requested at {when.isoformat()}")
        self.when = when


class JobCancelled(JobqError):
    """Raised inside a task (by ``ctx.raise_if_cancelled()``) when its job was cancelled."""
