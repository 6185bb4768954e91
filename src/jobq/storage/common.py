"""Pieces both drivers share: input validation, result ordering, the in-process event bus."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..errors import InvalidJobError
from ..model import Job
from .base import MAX_PRIORITY, MIN_PRIORITY, NewJob, NotificationHandler

MAX_NAME_LENGTH = 128


def validate_new_job(job: NewJob) -> None:
    """Refuse, with a message a person can act on, what the schema's CHECKs would refuse."""
    for field_name in ("kind", "queue"):
        value = getattr(job, field_name)
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
            raise InvalidJobError(f"{field_name} must be 1 to {MAX_NAME_LENGTH} characters")
    for field_name in ("kind", "queue", "tenant", "idempotency_key", "unique_key"):
        value = getattr(job, field_name)
        if isinstance(value, str) and "\x00" in value:
            raise InvalidJobError(f"{field_name} cannot contain U+0000 (NUL)")
    if not isinstance(job.payload, dict):
        raise InvalidJobError("payload must be a JSON object")
    if not MIN_PRIORITY <= job.priority <= MAX_PRIORITY:
        raise InvalidJobError(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
    if not 1 <= job.max_attempts <= 1000:
        raise InvalidJobError("max_attempts must be between 1 and 1000")
    if job.timeout_s is not None and job.timeout_s <= 0:
        raise InvalidJobError("timeout must be positive")
    if job.run_at is not None and job.run_at.tzinfo is None:
        raise InvalidJobError("run_at must be timezone-aware (e.g. datetime.now(UTC))")


def contains_nul(value: Any) -> bool:
    """True when a string or key anywhere in a JSON value holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


def refuse_nul(encoded: str | bytes, value: Any) -> None:
    """PostgreSQL cannot store U+0000 in text or jsonb; jobq refuses it on every database so
    that both answer alike. The scan of the encoded JSON is the cheap test that nearly always
    settles it; only a hit (which a literal backslash-u0000 can fake) walks the value."""
    marker: str | bytes = "\\u0000" if isinstance(encoded, str) else b"\\u0000"
    if marker in encoded and contains_nul(value):  # type: ignore[operator]
        raise InvalidJobError("strings and keys in a payload cannot contain U+0000 (NUL)")


def dump_json(value: Any) -> str:
    """Serialize a payload or result; a clear error for what JSON cannot hold."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError as exc:
        raise InvalidJobError(f"value is not JSON-serializable: {exc}") from exc


def dump_optional_json(value: Any) -> str | None:
    return None if value is None else dump_json(value)


def match_inserted(
    requested: Sequence[NewJob], inserted: Iterable[Job], existing: Iterable[Job]
) -> list[Job]:
    """Line up the jobs a batch insert produced with the order they were requested in.

    Keyless jobs are all inserted, and their ids grow in request order. A job with an
    idempotency key maps to the row holding that key, new or pre-existing.
    """
    inserted_sorted = sorted(inserted, key=lambda j: j.id)
    by_key = {j.idempotency_key: j for j in existing if j.idempotency_key is not None}
    by_key.update({j.idempotency_key: j for j in inserted_sorted if j.idempotency_key})
    keyless = iter([j for j in inserted_sorted if j.idempotency_key is None])
    result: list[Job] = []
    for job in requested:
        if job.idempotency_key is None:
            result.append(next(keyless))
        else:
            result.append(by_key[job.idempotency_key])
    return result


class LocalBus:
    """Delivers notifications to listeners in this process: the fast path when the producer
    and the worker share a process, and the only push a SQLite database has."""

    def __init__(self) -> None:
        self._handlers: list[NotificationHandler] = []

    def subscribe(self, handler: NotificationHandler) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: NotificationHandler) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)

    def publish(self, kind: str, value: str) -> None:
        for handler in list(self._handlers):
            handler(kind, value)


class LocalListener:
    def __init__(self, bus: LocalBus, handler: NotificationHandler) -> None:
        self._bus = bus
        self._handler = handler
        bus.subscribe(handler)

    async def close(self) -> None:
        self._bus.unsubscribe(self._handler)
