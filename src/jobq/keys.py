"""API key secrets: made here, stored only as a hash, checked in constant time.

A key reads ``jobq_<id>_<secret>``. The id is public (it names the key in ``jobq keys
list`` and in logs) and finds the row; the secret is 256 random bits. For a random secret
of that size a single SHA-256 is the right hash: slow password hashes exist to protect
guessable secrets, which these are not, and they would cost every request milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from .access import ADMIN, SCOPES
from .errors import ConfigurationError

PREFIX = "jobq"
_TOKEN = re.compile(r"^jobq_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_key() -> tuple[str, str, str]:
    """(key id, secret, the whole key to hand out)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or ``2w``."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) < 1:
        raise ConfigurationError(f"{text!r} is not a duration like 90d, 12h, 30m or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ConfigurationError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCOPES)}"
        )
    if ADMIN in scopes:
        raise ConfigurationError("the admin scope is given by --admin, not --scopes")
    return scopes
