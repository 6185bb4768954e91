"""Who is asking: the tenant a caller acts for and what it may do.

JobQueue methods take an ``access`` and apply its tenant to every read and write they do,
so tenant isolation is written once, there: a job of another tenant is "not found".
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import JobNotFoundError
from .model import Job

READ = "jobs:read"
WRITE = "jobs:write"  # enqueue
MANAGE = "jobs:manage"  # cancel, retry, requeue
ADMIN = "admin"  # workers, metrics, keys, every tenant
SCOPES = (READ, WRITE, MANAGE, ADMIN)


@dataclass(frozen=True, slots=True)
class Access:
    """``tenant`` None: every tenant (an admin key, or the library used directly)."""

    tenant: str | None
    scopes: frozenset[str]
    key_id: str | None = None

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    def owns(self, job: Job) -> bool:
        return self.tenant is None or job.tenant == self.tenant

    def checked(self, job: Job | None, job_id: int) -> Job:
        """The job if this caller may see it; another tenant's job is as absent as a
        missing one, so that its existence is not revealed either."""
        if job is None or not self.owns(job):
            raise JobNotFoundError(f"no job with id {job_id}")
        return job


# What a caller gets when the API runs without keys (loopback only, or --insecure-no-auth).
OPEN = Access(tenant=None, scopes=frozenset({ADMIN}))
