"""The app the executor shutdown test runs in a real ``jobq worker`` process."""

from __future__ import annotations

from jobq import JobQueue

from . import executor_tasks

jq = JobQueue()  # JOBQ_DATABASE_URL from the test's environment

hang_in_thread = jq.task(name="hang_in_thread", timeout=1, max_attempts=1)(executor_tasks.hang)
hang_in_child = jq.task(name="hang_in_child", executor="process")(executor_tasks.hang)
