"""Enqueueing checks the kind and the arguments where the enqueuing side knows the task: a
mistake is refused at once, naming what is wrong, and nothing is stored (rather than a job
that is retried until it dead-letters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from jobq import ConfigurationError, InvalidJobError, JobContext, JobQueue, UnknownTaskError
from jobq.worker.simulated import register_demo_tasks


@pytest.fixture
async def jq(sqlite_url: str) -> AsyncIterator[JobQueue]:
    queue = JobQueue(sqlite_url)

    @queue.task
    async def send_email(ctx: JobContext, to: str, subject: str) -> None:
        return None

    @queue.task
    def resize(ctx: JobContext, path: str, width: int = 640, **extra: object) -> str:
        return path

    @queue.task
    def at(ctx: JobContext, when: datetime, box: tuple[int, int], scale: float = 1.0) -> None:
        return None

    try:
        yield queue
    finally:
        await queue.close()


async def _nothing_stored(jq: JobQueue) -> None:
    assert await jq.list() == []


async def test_an_unexpected_argument_is_named_with_the_missing_one(jq: JobQueue) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await jq.tasks["send_email"].defer(too="a", subject="b")
    assert "unexpected argument 'too'" in str(refused.value)
    assert "missing a required argument: 'to'" in str(refused.value)
    await _nothing_stored(jq)


async def test_an_annotated_type_is_checked(jq: JobQueue) -> None:
    send_email = jq.tasks["send_email"]
    with pytest.raises(InvalidJobError, match="to: input should be a valid string, got 123"):
        await send_email.defer(to=123, subject="b")
    with pytest.raises(InvalidJobError, match="width: input should be a valid integer"):
        await jq.tasks["resize"].defer(path="a.png", width="640")  # the task gets a str
    with pytest.raises(InvalidJobError, match="missing a required argument: 'subject'"):
        await send_email.defer("a@b.c")  # positional arguments are checked the same way
    await _nothing_stored(jq)


async def test_what_json_carries_passes(jq: JobQueue) -> None:
    """The function receives its payload decoded from JSON: a tuple travels as a list, a
    datetime as an ISO string, an int where a float is asked; ``**extra`` takes any key."""
    await jq.tasks["at"].defer(when=datetime(2030, 1, 1), box=(1, 2), scale=2)
    await jq.enqueue("at", {"when": "2030-01-01T00:00:00Z", "box": [1, 2]})
    await jq.tasks["resize"].defer("a.png", quality=9)
    assert len(await jq.list()) == 3


async def test_enqueue_by_name_checks_the_same(jq: JobQueue) -> None:
    with pytest.raises(InvalidJobError, match="unexpected argument 'too'"):
        await jq.enqueue("send_email", {"too": "a", "subject": "b"})
    with pytest.raises(InvalidJobError, match="to: input should be a valid string"):
        jq.enqueue_sync("send_email", {"to": 1, "subject": "b"})
    with pytest.raises(InvalidJobError, match="missing a required argument: 'to'"):
        jq.new_job("send_email", {"subject": "b"})  # what enqueue_many is given
    await _nothing_stored(jq)


async def test_an_unknown_kind_is_refused_by_a_queue_that_knows_its_tasks(jq: JobQueue) -> None:
    with pytest.raises(UnknownTaskError, match=r"unknown kind 'send_emial'.*send_email"):
        await jq.enqueue("send_emial", {"to": "a"})
    with pytest.raises(UnknownTaskError):
        jq.enqueue_sync("send_emial", {"to": "a"})
    await _nothing_stored(jq)


async def test_a_queue_without_tasks_cannot_check_and_lets_any_kind_through(
    sqlite_url: str,
) -> None:
    """A producer that does not import the tasks (and an API without its app, or with the
    demo kinds only) leaves the kind to the workers."""
    producer = JobQueue(sqlite_url)
    register_demo_tasks(producer)
    try:
        assert not producer.knows_its_kinds
        job = await producer.enqueue("defined_elsewhere", {"anything": 1})
        assert job.kind == "defined_elsewhere"
    finally:
        await producer.close()


class Opaque:
    """A type pydantic has no schema for."""


async def test_an_annotation_pydantic_cannot_check_is_left_unchecked(jq: JobQueue) -> None:
    @jq.task
    def handles(ctx: JobContext, thing: Opaque, n: int) -> None:
        return None

    jq.new_job("handles", {"thing": "anything", "n": 1})
    with pytest.raises(InvalidJobError, match="n: input should be a valid integer"):
        jq.new_job("handles", {"thing": "anything", "n": "1"})


async def test_the_contexts_name_is_no_argument(jq: JobQueue) -> None:
    """``resize`` takes ``**extra``: a ``ctx`` key would still clash with its context."""
    with pytest.raises(InvalidJobError, match="'ctx' is the job's context"):
        await jq.tasks["resize"].defer(path="a.png", ctx=1)
    with pytest.raises(InvalidJobError, match="'ctx' is the job's context"):
        await jq.enqueue("resize", {"path": "a.png", "ctx": 1})
    await _nothing_stored(jq)


def test_a_positional_only_parameter_is_refused_when_registered(jq: JobQueue) -> None:
    """The worker calls the function with the payload by name: ``x`` could never be given."""

    def by_position(ctx: JobContext, x: int, /) -> None:
        return None

    with pytest.raises(ConfigurationError, match="'x' not positional-only"):
        jq.task(by_position)
    assert "by_position" not in jq.tasks
