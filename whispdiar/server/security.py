"""The gate every request passes first (an ASGI middleware, before any body is read).

In order: the ``Host`` header (DNS rebinding: a web page on a name its attacker points at
127.0.0.1 sends that name, so only loopback names, IP literals, the bound name and the
``--allow-host`` names pass), the ``Origin`` of browser requests (another web site's page
may POST to a loopback server without CORS; only this server's own origin and
``--allow-origin`` ones pass, the latter with CORS headers), the bearer token when one is
set (compared in constant time), and a declared body larger than the upload limit (413
before a byte of it is stored). Every answer gets headers that keep results out of caches
and MIME sniffing.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .config import LOOPBACK_NAMES, ServerConfig
from .errors import error_body, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_OVERHEAD = 1 << 20  # a multipart body's fields and boundaries, beyond the file itself
DRAIN_LIMIT = 64 << 20  # a too-large body up to this much is read and dropped, so the client sees the 413
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer")]


def split_host(value: str) -> str:
    """The name or address of a ``Host`` header, lower case, without port or brackets."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:v.find("]")] if "]" in v else v[1:]
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which ``Host`` names and ``Origin`` values a server accepts (see the module doc)."""

    def __init__(self, config: ServerConfig):
        bound = split_host(config.host)
        self.any_host = "*" in config.allowed_hosts
        names = set(LOOPBACK_NAMES) | {split_host(h) for h in config.allowed_hosts if h != "*"}
        if not _is_ip(bound):
            names.add(bound)
        elif ipaddress.ip_address(bound).is_unspecified:  # 0.0.0.0 / ::: this machine's own names too
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.names = frozenset(names)
        self.any_origin = "*" in config.allowed_origins
        self.origins = frozenset(o.lower().rstrip("/") for o in config.allowed_origins if o != "*")

    def host_ok(self, host: str | None) -> bool:
        if host is None:
            return False
        name = split_host(host)
        # DNS rebinding needs a DNS name its attacker controls: an IP literal came here directly.
        return self.any_host or name in self.names or _is_ip(name)

    def origin_ok(self, origin: str, host: str) -> bool:
        o = origin.strip().lower().rstrip("/")
        if o in self.origins or (self.any_origin and o != "null"):
            return True
        # This server's own origin (same scheme-less host:port as the request was sent to).
        return o.split("://", 1)[-1] == host.strip().lower()

    def cors(self, origin: str) -> bool:
        """Whether answers to ``origin`` carry CORS headers (an origin let in by configuration)."""
        o = origin.strip().lower().rstrip("/")
        return o in self.origins or (self.any_origin and o != "null")


class Guard:
    """ASGI middleware: Host, Origin, token, declared body size; security headers."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.policy = HostPolicy(config)
        self.token = config.token.encode() if config.token else None
        self.max_upload = config.max_upload_bytes
        self.max_body = config.max_upload_bytes + FORM_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        host = headers.get("host")
        if not self.policy.host_ok(host):
            await reply(send, 403, f"this server does not answer to the host name {host or '(none)'!r} "
                        "(a DNS rebinding guard; start it with --allow-host NAME to accept that name)",
                        "host_not_allowed")
            return
        assert host is not None
        origin = headers.get("origin")
        cors = origin if origin is not None and self.policy.cors(origin) else None
        if origin is not None and not self.policy.origin_ok(origin, host):
            await reply(send, 403, f"requests from web pages of {origin} are not accepted "
                        "(start the server with --allow-origin ORIGIN to accept them)", "origin_not_allowed")
            return
        if scope["method"] == "OPTIONS" and cors is not None and "access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": _cors_headers(cors) + [
                (b"access-control-allow-methods", b"GET, POST, PATCH, DELETE, OPTIONS"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.token is not None and not self._authorized(headers.get("authorization")):
            await reply(send, 401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                        "invalid_token", [(b"www-authenticate", b'Bearer realm="whispdiar"')], cors=cors)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            if headers.get("expect", "").lower() != "100-continue" and int(declared) <= self.max_body + DRAIN_LIMIT:
                await drain(receive)  # a client that sends its body unasked reads the answer only after it
            err = too_large(self.max_upload)
            await reply(send, err.status, err.message, err.code, [(b"connection", b"close")], cors=cors)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS,
                                      *(_cors_headers(cors) if cors is not None else [])]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorized(self, value: str | None) -> bool:
        assert self.token is not None
        if value is None:
            return False
        scheme, _, given = value.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)


def _headers(scope: Scope) -> dict[str, str]:
    # Header names arrive lower-cased; a repeated header keeps its first value.
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        out.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    return out


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
            (b"access-control-expose-headers", b"Location, Retry-After")]


async def drain(receive: Receive, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop the rest of a request body (up to ``limit`` bytes)."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def drain_chunks(chunks: AsyncIterator[bytes], limit: int = DRAIN_LIMIT) -> None:
    """The same for a body being read as a stream of chunks (a parser stopped mid-way)."""
    seen = 0
    with contextlib.suppress(Exception):  # the client may be gone: nothing to drain then
        async for chunk in chunks:
            seen += len(chunk)
            if seen > limit:
                return


async def reply(send: Send, status: int, message: str, code: str | None = None,
                headers: list[tuple[bytes, bytes]] | None = None, *, cors: str | None = None) -> None:
    """A JSON error answer sent straight from the middleware."""
    body = error_body(status, message, code=code)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS, *(headers or []), *(_cors_headers(cors) if cors is not None else [])]})
    await send({"type": "http.response.body", "body": body})
