"""Enqueueing from synchronous code (a Django or Flask view, a script), runnable:
python examples/sync_producer.py [DATABASE_URL]."""

from __future__ import annotations

import asyncio
import sys

import psycopg

from jobq import JobContext, JobQueue

URL = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///./sync_producer.db"
jq = JobQueue(URL)


@jq.task
def send_receipt(ctx: JobContext, order: int) -> str:
    return f"receipt for order {order}"


def place_order(order: int) -> int:
    """What a view does. With PostgreSQL the job is part of the order's own transaction: both
    commit, or neither does. SQLite cannot share a transaction with jobq: enqueue after it."""
    if URL.startswith("postgres"):
        with psycopg.connect(URL) as conn, conn.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)")
            conn.execute("INSERT INTO orders VALUES (%s)", (order,))
            return send_receipt.configure(connection=conn).defer_sync(order=order).id
    return send_receipt.defer_sync(order=order).id


async def migrate() -> None:
    await jq.migrate()
    await jq.close()


async def work() -> None:
    # Normally a separate process: jobq worker examples.sync_producer:jq
    await jq.run_worker(burst=True)
    await jq.close()


def main() -> None:
    asyncio.run(migrate())  # normally once, at deploy: jobq migrate
    with jq:  # closes the connections of the *_sync calls at the end
        ids = [place_order(order) for order in (1, 2)]
        asyncio.run(work())
        for job_id in ids:
            job = jq.get_sync(job_id)
            print(f"{job.kind} -> {job.status} {job.result}")


if __name__ == "__main__":
    main()
