"""Scheduling and flow control, runnable: python examples/flow_control.py [DATABASE_URL].

Unique jobs, a chain with a group, a failure cancelling what depends on it, a concurrency
limit, a rate limit, progress, results and waiting. See docs/scheduling.md.
"""

from __future__ import annotations

import asyncio
import sys

from jobq import JobContext, JobQueue, JobStatus

jq = JobQueue(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///./flow_control.db")


@jq.task(max_running=2)  # at most two of these run at once, across every worker
async def fetch(ctx: JobContext, url: str) -> int:
    await ctx.progress(50, f"downloading {url}")
    return len(url)


@jq.task(rate_limit=(10, 1.0))  # at most ten start in any second, across every worker
async def resize(ctx: JobContext, size: int) -> str:
    return f"resized to {size}"


@jq.task(max_attempts=1)
async def flaky(ctx: JobContext) -> None:
    raise RuntimeError("upstream is down")


@jq.task
async def notify(ctx: JobContext, who: str) -> str:
    return f"told {who}"


async def main() -> None:
    await jq.migrate()

    # Unique jobs: while the first is queued (or running), the second enqueue returns it.
    first = await fetch.configure(unique_key="fetch:home").defer(url="https://example.com")
    again = await fetch.configure(unique_key="fetch:home").defer(url="https://example.com")
    assert again.id == first.id

    # A chain: fetch, then two resizes side by side, then notify once both succeeded.
    steps = await jq.chain(
        fetch.job(url="https://example.org"),
        jq.group(resize.job(size=64), resize.job(size=128)),
        notify.job(who="ops"),
    )
    print("chain      ->", [(j.id, str(j.status)) for j in steps])  # the later steps wait

    # A failure cancels the jobs that depend on it.
    broken = await flaky.defer()
    orphan = await notify.configure(depends_on=[broken.id]).defer(who="nobody")

    await jq.run_worker(burst=True)  # drain what is due, then return

    done = await jq.wait(steps[-1].id, timeout=10)
    print("notify     ->", done.status, done.result)
    print("fetch      ->", (await jq.get(first.id)).result, (await jq.get(first.id)).progress)
    cancelled = await jq.get(orphan.id)
    print("orphan     ->", cancelled.status, cancelled.last_error)
    assert done.status is JobStatus.SUCCEEDED and done.result == "told ops"
    assert cancelled.status is JobStatus.CANCELLED
    await jq.close()


if __name__ == "__main__":
    asyncio.run(main())
