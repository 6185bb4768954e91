"""Bearer API keys: which Access a request's key grants.

Auth is on as soon as one key exists in the database, and stays on. Whether one does is
read at most every ``auth_cache_s`` until one is found; a key's row is trusted for as long,
so a revocation reaches every API process within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from ..access import OPEN, Access
from ..app import JobQueue
from ..keys import parse_key, secret_matches
from ..model import ApiKey
from .problems import ProblemError

log = structlog.get_logger("jobq.api")
TOUCH_EVERY_S = 60.0  # last_used_at is this coarse: one write a minute, not one a request
MAX_CACHED_KEYS = 10_000
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jobq"'}


class Authenticator:
    def __init__(
        self, jobq: JobQueue, cache_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._jobq = jobq
        self._cache_s = cache_s
        self._clock = clock
        self._any_key = False
        self._any_key_read_at: float | None = None
        self._keys: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()
        self._used: set[str] = set()
        self._touched_at = -TOUCH_EVERY_S
        self._touching: asyncio.Task[None] | None = None

    async def enabled(self) -> bool:
        if self._any_key:
            return True  # keys are revoked, never deleted: auth, once on, stays on
        now = self._clock()
        if self._any_key_read_at is None or now - self._any_key_read_at >= self._cache_s:
            self._any_key = await self._jobq.any_api_key()
            self._any_key_read_at = now
        return self._any_key

    async def access_of(self, authorization: str | None) -> Access:
        """The caller's Access; ProblemError 401 for a missing, unknown, wrong, revoked or
        expired key. Without any key in the database, every caller is OPEN."""
        if not await self.enabled():
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send an API key: Authorization: Bearer <key>")
        parsed = parse_key(token.strip())
        key = await self._key(parsed[0]) if parsed else None
        if parsed is None or key is None or not secret_matches(parsed[1], key.secret_hash):
            raise _unauthorized("the API key is not valid")
        if key.revoked_at is not None:
            raise _unauthorized(f"API key {key.id} was revoked")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise _unauthorized(f"API key {key.id} has expired")
        self._note_use(key.id)
        return Access(tenant=key.tenant, scopes=frozenset(key.scopes), key_id=key.id)

    async def _key(self, key_id: str) -> ApiKey | None:
        now = self._clock()
        cached = self._keys.get(key_id)
        if cached is not None and now - cached[1] < self._cache_s:
            self._keys.move_to_end(key_id)
            return cached[0]
        key = await self._jobq.api_key(key_id)
        self._keys[key_id] = (key, now)
        self._keys.move_to_end(key_id)
        while len(self._keys) > MAX_CACHED_KEYS:
            self._keys.popitem(last=False)
        return key

    def _note_use(self, key_id: str) -> None:
        self._used.add(key_id)
        now = self._clock()
        if now - self._touched_at < TOUCH_EVERY_S:
            return
        if self._touching is not None and not self._touching.done():
            return
        self._touched_at = now
        used, self._used = sorted(self._used), set()
        self._touching = asyncio.get_running_loop().create_task(self._touch(used))

    async def _touch(self, key_ids: list[str]) -> None:
        try:
            await self._jobq.touch_api_keys(key_ids)
        except Exception as exc:  # only the last-used time is lost
            log.warning("could not record API key use", error=str(exc))

    async def close(self) -> None:
        if self._touching is not None:
            await asyncio.gather(self._touching, return_exceptions=True)


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers=dict(BEARER_CHALLENGE))
