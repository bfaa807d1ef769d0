"""Request-body size limits, enforced before the body is read.

:class:`BodySizeLimit` is an ASGI middleware: a request whose ``Content-Length`` is over its route's
limit is answered 413 (OpenAI error body, code ``request_too_large``) before one byte of the body is
read; a body without a length (chunked) is counted as it arrives and refused the moment it passes
the limit. Nothing past the limit is ever buffered, so a 50 MiB body costs no memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from omni_agent.server.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (FastAPI re-raises HTTP errors)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


class BodySizeLimit:
    """Refuse HTTP bodies larger than ``max_bytes`` (``per_path``: other limits by path prefix).

    Args:
        app: the wrapped ASGI app.
        max_bytes: the limit for every route not in ``per_path``.
        per_path: ``{path prefix: limit}``, e.g. a larger one for file uploads.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None):
        self.app, self.max_bytes = app, max_bytes
        self.per_path = sorted((per_path or {}).items(), key=lambda kv: -len(kv[0]))  # longest prefix wins

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.per_path if path.startswith(prefix)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(send, 400, "Content-Length is not a number", "invalid_request")
                return
            if int(length) > limit:  # refused before reading: the client may still be sending
                await _reply(send, 413, f"request body of {int(length)} bytes is larger than the limit of "
                                        f"{limit} bytes", "request_too_large")
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as e:  # raised where no handler turned it into a response
            if started:
                raise
            await _reply(send, 413, str(e.detail), "request_too_large")


async def _reply(send: Callable[[Message], Awaitable[None]], status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(message, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
