"""jobq: a durable job queue for Python on PostgreSQL or SQLite."""

from .app import JobQueue
from .config import Settings
from .errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DoNotRetry,
    InvalidJobError,
    JobCancelled,
    JobNotFoundError,
    JobqError,
    MigrationError,
    RetryAt,
    UnknownTaskError,
    UnsupportedFeatureError,
)
from .model import Job, JobError, JobStatus
from .retry import RetryPolicy
from .storage.base import CancelOutcome, CancelResult, NewJob
from .task import Task
from .worker.context import JobContext
from .worker.runtime import Worker

__all__ = [
    "CancelOutcome",
    "CancelResult",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DoNotRetry",
    "InvalidJobError",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobNotFoundError",
    "JobQueue",
    "JobStatus",
    "JobqError",
    "MigrationError",
    "NewJob",
    "RetryAt",
    "RetryPolicy",
    "Settings",
    "Task",
    "UnknownTaskError",
    "UnsupportedFeatureError",
    "Worker",
]
