"""Limits that keep the API's memory bounded and its clients fair: body size, per-client
token buckets, queue depth."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import ProblemError, send_problem

log = structlog.get_logger("jobq.api")


class BodyLimitMiddleware:
    """Refuses a request body over its limit with 413 before it is buffered whole: at once
    when Content-Length says so, else as soon as the streamed bytes pass the limit. A body
    that has not arrived whole ``read_timeout_s`` after the request began is cut off with
    408: a client trickling its body would otherwise hold a connection (and its buffer)
    for as long as it likes."""

    def __init__(
        self, app: ASGIApp, limit_for: Callable[[str], int], read_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_refusal(send, 413, limit)
            return
        seen = 0
        body_done = False
        started = False
        answered = False  # we sent the refusal; whatever the app sends later is dropped
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s

        async def refuse(status: int) -> Message:
            nonlocal answered
            if not answered and not started:
                answered = True
                await _send_refusal(send, status, limit)
            # The app sees a client that went away and stops reading.
            return {"type": "http.disconnect"}

        async def counting_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                return await receive()  # e.g. a stream waiting for the client to go
            try:
                # A deadline on the running task, not wait_for: that made a task per read.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                log.info("request body too slow; cut off", path=scope["path"])
                return await refuse(408)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limit:
                    return await refuse(413)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not answered:
                started = True
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _send_refusal(send: Send, status: int, limit: int) -> None:
    if status == 413:
        title = "Payload too large"
        detail = f"The request body is larger than this endpoint's limit of {limit} bytes."
    else:
        title = "Request timeout"
        detail = "The request body did not arrive in time (JOBQ_BODY_READ_TIMEOUT_S)."
    await send_problem(send, status, title, detail, close=True)


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # seconds until one more request would be allowed


class RateLimiter:
    """Token buckets per client id, ``rate`` tokens a second up to ``burst``. At most
    ``max_clients`` buckets are kept (least recently seen dropped first), so a flood of new
    client ids cannot grow memory without bound. Per process: with several API processes each
    applies the limit on its own."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def check(self, client: str) -> RateDecision:
        now = self.clock()
        bucket = self._buckets.pop(client, None) or Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        missing = self.burst - bucket.tokens
        return RateDecision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(bucket.tokens),
            reset_s=math.ceil(missing / self.rate),
            retry_after_s=0 if allowed else max(1, math.ceil((1 - bucket.tokens) / self.rate)),
        )


class DepthGate:
    """Answers "is this queue full?" without counting the queue on every request: the count
    is read at most every ``refresh_s`` and moved forward by this process's own accepts in
    between. Several API processes can each overshoot by what they accept within one refresh.
    """

    def __init__(
        self,
        limit: int,
        count: Callable[[str, int], Awaitable[int]],
        refresh_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._count = count
        self.refresh_s = refresh_s
        self.clock = clock
        self._known: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def has_room(self, queue: str, adding: int) -> bool:
        now = self.clock()
        known = self._known.get(queue)
        if known is None or now - known[1] > self.refresh_s:
            known = (await self._count(queue, self.limit), now)
        self._known[queue] = known
        self._known.move_to_end(queue)
        while len(self._known) > 10_000:
            self._known.popitem(last=False)
        return known[0] + adding <= self.limit

    def accepted(self, queue: str, added: int) -> None:
        known = self._known.get(queue)
        if known is not None:
            self._known[queue] = (known[0] + added, known[1])


class StreamSlots:
    """Caps on open event streams, each of which polls the database five times a second
    for as long as it is open: ``total`` per process (503 past it: the server is full) and
    ``per_client`` per API key, or per client without keys (429: that caller holds enough).
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self._by_client: dict[str, int] = {}

    def acquire(self, client: str) -> Callable[[], None]:
        """Take a slot for ``client``; the function that gives it back (safe to call twice)."""
        if self._by_client.get(client, 0) >= self.per_client:
            raise ProblemError(
                429,
                "Too many streams",
                f"this client already follows {self.per_client} jobs "
                "(JOBQ_MAX_EVENT_STREAMS_PER_CLIENT); close one first",
                headers={"Retry-After": "5"},
            )
        if self.open >= self.total:
            raise ProblemError(
                503,
                "Too many streams",
                f"this server holds its limit of {self.total} open event streams "
                "(JOBQ_MAX_EVENT_STREAMS); retry shortly",
                headers={"Retry-After": "5"},
            )
        self.open += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]

        return release
