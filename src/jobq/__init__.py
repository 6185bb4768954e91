"""jobq: a durable job queue for Python on PostgreSQL or SQLite."""

from .app import JobQueue
from .config import Settings
from .errors import (
    ConfigurationError,
    ContentionError,
    DatabaseUnavailableError,
    DoNotRetry,
    InvalidJobError,
    InvalidTransitionError,
    JobCancelled,
    JobNotFoundError,
    JobqError,
    LeaseLostError,
    MigrationError,
    RetryAt,
    SchemaMissingError,
    TenantQuotaExceeded,
    UnknownTaskError,
    UnsupportedFeatureError,
)
from .model import Job, JobError, JobStatus
from .retry import RetryPolicy
from .storage.base import CancelOutcome, CancelResult, Enqueued, EnqueueOutcome, NewJob
from .task import Task
from .worker.context import JobContext
from .worker.runtime import Worker

__all__ = [
    "CancelOutcome",
    "CancelResult",
    "ConfigurationError",
    "ContentionError",
    "DatabaseUnavailableError",
    "DoNotRetry",
    "EnqueueOutcome",
    "Enqueued",
    "InvalidJobError",
    "InvalidTransitionError",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobNotFoundError",
    "JobQueue",
    "JobStatus",
    "JobqError",
    "LeaseLostError",
    "MigrationError",
    "NewJob",
    "RetryAt",
    "RetryPolicy",
    "SchemaMissingError",
    "Settings",
    "Task",
    "TenantQuotaExceeded",
    "UnknownTaskError",
    "UnsupportedFeatureError",
    "Worker",
]
