"""What a web browser could otherwise do to an API on a developer's machine.

* DNS rebinding: a page on attacker.example re-points its name at 127.0.0.1 and calls the
  API as "same origin". Its requests still carry ``Host: attacker.example``: only the Host
  names on the allow-list are answered.
* Cross-site requests: a page may send "simple" requests (a form post, a body-less POST)
  to any address without asking CORS first. Browsers send ``Origin`` with every such
  request, and with every cross-origin fetch: a request whose Origin is neither the API's
  own (a page it serves, like /docs) nor on the allow-list is refused, whatever its method.
  Form and text bodies, which only a form or a simple request would use, are refused on
  state-changing methods too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import send_problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "text/plain"})


def host_name(host: str) -> str:
    """The name of a Host header, without its port: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuardMiddleware:
    def __init__(
        self, app: ASGIApp, allowed_hosts: frozenset[str] | None, allowed_origins: list[str]
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            await send_problem(send, 400, "Invalid host", f"this API does not answer Host {host!r}")
            return
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), host):
            await send_problem(
                send,
                403,
                "Origin not allowed",
                "requests from this web origin are refused (JOBQ_ALLOWED_ORIGINS)",
            )
            return
        # The dashboard's forms (under /ui) are form posts by design: a CSRF token bound to
        # an HttpOnly, SameSite=Strict session guards them instead.
        if scope["method"] not in SAFE_METHODS and not scope["path"].startswith("/ui/"):
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if content_type.decode("latin-1") in FORM_TYPES:
                await send_problem(
                    send,
                    415,
                    "Unsupported media type",
                    "send JSON (application/json), or a multipart form to /jobs/bulk",
                )
                return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin.rstrip("/") in self.allowed_origins:
            return True
        # The API's own pages (Swagger UI at /docs) send their own origin: same host and
        # port. The scheme is not compared: behind a TLS proxy the API sees plain HTTP.
        netloc = urlsplit(origin).netloc.lower()
        return bool(netloc) and netloc == host.strip().lower()
