"""Who may use ``rmt serve``: an optional API key on every route but ``/health``, and a warning when
the server listens beyond loopback without one."""

from __future__ import annotations

import hmac
import ipaddress
import json

API_KEY_ENV = "RMT_API_KEY"  # where `rmt serve` reads the key when --api-key is not given
OPEN_PATHS = frozenset({"/health"})  # answered without a key (load balancers, supervisors)


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()


class APIKeyMiddleware:
    """ASGI middleware: every HTTP request but :data:`OPEN_PATHS` needs ``Authorization: Bearer KEY``
    (what the ``openai`` client sends), else 401 in OpenAI's shape. A plain ASGI wrapper (not
    Starlette's BaseHTTPMiddleware), so handlers still see a client's disconnect."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        message = ("missing API key: send the header 'Authorization: Bearer KEY' (the key given to rmt serve "
                   f"with --api-key or {API_KEY_ENV})" if not given else "incorrect API key provided")
        body = _error_body(message, "invalid_api_key")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    """``host`` only reaches this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for listening beyond loopback without an API key (None when there is nothing to say)."""
    if api_key or is_loopback(host):
        return None
    return (f"warning: rmt serve listens on {host} without an API key: anyone who can reach this port can "
            f"use the model. Give --api-key (or set {API_KEY_ENV}), or listen on 127.0.0.1.")
