"""The README's library example, runnable: python examples/quickstart.py [DATABASE_URL]."""

from __future__ import annotations

import asyncio
import sys

from jobq import JobContext, JobQueue, JobStatus

jq = JobQueue(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///./quickstart.db")


@jq.task(queue="email", max_attempts=3, timeout=30, retry_for=(ConnectionError,))
async def send_email(ctx: JobContext, to: str, subject: str) -> dict[str, str]:
    ctx.log.info("sending", to=to, attempt=ctx.attempt)
    return {"sent_to": to}


@jq.task
def resize(ctx: JobContext, path: str, width: int = 640) -> str:  # sync: runs in a thread
    return f"{path}@{width}"


async def main() -> None:
    await jq.migrate()
    one = await send_email.defer(to="a@example.com", subject="hi")
    later = await send_email.configure(delay=3600, priority=10).defer(
        to="b@example.com", subject="x"
    )
    many = await jq.enqueue_many([resize.job(path=f"img{i}.png") for i in range(3)])
    await jq.run_worker(burst=True)  # drain what is due, then return

    print("send_email ->", (await jq.get(one.id)).result)
    print("resize     ->", [(await jq.get(j.id)).result for j in many])
    print("scheduled  ->", (await jq.get(later.id)).status)
    assert (await jq.get(later.id)).status is JobStatus.QUEUED
    await jq.close()


if __name__ == "__main__":
    asyncio.run(main())
