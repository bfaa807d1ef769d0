"""Bearer API-key check shared by every HTTP route (``settings.server.api_key``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from omni_agent.server.errors import APIError


def api_key_dependency(api_key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that rejects requests without ``Authorization: Bearer <api_key>``.

    With ``api_key`` None every request passes. Websocket routes can call
    :func:`check_authorization` on the handshake headers themselves.
    """

    def check(request: Request) -> None:
        check_authorization(api_key, request.headers.get("authorization"))

    return check


def check_authorization(api_key: str | None, header: str | None) -> None:
    """Raise a 401 ``APIError`` unless ``header`` carries the key (constant-time compare)."""
    if api_key is None:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                       type="invalid_request_error", code="invalid_api_key")
