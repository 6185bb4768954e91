"""Who is looking at the dashboard, and what they may do.

``allowed_actions`` is the one place that maps an identity's scopes to the dashboard's
actions: templates show a button only for an allowed action, and every action route checks
it again, so a forged POST is refused just as a hidden button is.

Identities come from API keys through ``DashboardAuth.resolve_key``. Without a resolver (a
server with no keys, e.g. on loopback) everyone is an administrator. With one, the sign-in
page takes a key, resolves it once, and keeps the identity in a signed session cookie
(HttpOnly, SameSite=Strict). Every form carries a CSRF token bound to the session.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..access import Access

SCOPE_READ = "jobs:read"
SCOPE_WRITE = "jobs:write"
SCOPE_MANAGE = "jobs:manage"
SCOPE_ADMIN = "admin"
COOKIE = "jobq_session"


class Action(enum.StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"  # a failed or cancelled job, run again
    REQUEUE = "requeue"  # dead letters, in bulk
    DISCARD = "discard"  # dead letters, deleted
    PAUSE = "pause"  # and resume


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    scopes: frozenset[str]
    tenant: str | None = None  # a tenant-bound key sees only that tenant's jobs

    @property
    def access(self) -> Access:
        """What the JobQueue's methods take: they keep a tenant-bound identity to its own
        jobs, as they keep an API key."""
        return Access(tenant=self.tenant, scopes=self.scopes)


LOOPBACK = Identity("loopback (no keys)", frozenset({SCOPE_ADMIN}))

# An API key in, its identity out (None: no such key, or revoked).
KeyResolver = Callable[[str], Awaitable[Identity | None]]


def allowed_actions(identity: Identity) -> frozenset[Action]:
    """The actions ``identity`` may take: every one with ``jobs:manage`` or ``admin``."""
    if identity.scopes & {SCOPE_MANAGE, SCOPE_ADMIN}:
        return frozenset(Action)
    return frozenset()


def can_view(identity: Identity) -> bool:
    return bool(identity.scopes & {SCOPE_READ, SCOPE_WRITE, SCOPE_MANAGE, SCOPE_ADMIN})


@dataclass(slots=True)
class DashboardAuth:
    """How the dashboard signs people in. ``secret`` signs the session cookie; give every
    API process the same one so that a session works on each (a random one per process by
    default: sessions then end when the process does)."""

    resolve_key: KeyResolver | None = None
    # Whether signing in is needed now (API keys exist); None: whenever there is a resolver.
    keys_required: Callable[[], Awaitable[bool]] | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    max_age_s: int = 8 * 3600
    secure_cookie: bool = False  # set behind HTTPS

    @property
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="jobq-dashboard-session")

    def new_session(self, identity: Identity | None = None) -> Session:
        return Session(secrets.token_urlsafe(16), identity, is_new=True)

    def load(self, cookie: str | None) -> Session:
        if cookie:
            try:
                data: dict[str, Any] = self._serializer.loads(cookie, max_age=self.max_age_s)
                who = data.get("who")
                identity = (
                    Identity(who["name"], frozenset(who["scopes"]), who.get("tenant"))
                    if who
                    else None
                )
                return Session(str(data["sid"]), identity, is_new=False)
            except (BadSignature, KeyError, TypeError, ValueError):
                pass
        return self.new_session()

    def dump(self, session: Session) -> str:
        who = session.identity
        return self._serializer.dumps(
            {
                "sid": session.sid,
                "who": None
                if who is None
                else {"name": who.name, "scopes": sorted(who.scopes), "tenant": who.tenant},
            }
        )

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self.secret, f"csrf:{session.sid}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(session), token)

    async def identity_of(self, session: Session) -> Identity | None:
        """Who the session is: everyone is an administrator when there are no keys."""
        if self.resolve_key is None:
            return LOOPBACK
        if self.keys_required is not None and not await self.keys_required():
            return LOOPBACK
        return session.identity


@dataclass(slots=True)
class Session:
    sid: str
    identity: Identity | None
    is_new: bool
