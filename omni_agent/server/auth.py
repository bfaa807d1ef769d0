"""Authentication, principals, failed-auth throttling and key redaction for every route.

- :class:`Authenticator` maps a bearer key (``Authorization: Bearer <key>``; on websockets also the
  ``openai-insecure-api-key.<key>`` subprotocol browsers must use) to a principal name (see
  :mod:`omni_agent.principal`): ``server.api_keys`` gives each key a name, ``server.api_key`` is
  ``"default"``, and a server without keys serves everyone as ``"local"``. Keys are compared in
  constant time; keys in a query string are never accepted.
- Failed attempts are throttled per client address (:class:`omni_agent.throttle.FailureThrottle`):
  after ``FREE_FAILURES`` within ``FAILURE_WINDOW_S`` the client gets 429 with ``Retry-After`` until
  the window has passed, so guessing keys runs at a few attempts a minute, not hundreds a second.
- :func:`principal_of` is what routes (HTTP and websocket) call: it authenticates once per
  connection, caches the principal on ``conn.state`` and sets it as the current principal.
- :func:`install_log_redaction` keeps keys out of uvicorn's access and error logs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection

from omni_agent.principal import DEFAULT_PRINCIPAL, LOCAL_PRINCIPAL, set_principal
from omni_agent.server.errors import APIError
from omni_agent.throttle import FailureThrottle

KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how OpenAI's browser clients send a key on a websocket


class Authenticator:
    """Bearer key -> principal name.

    Args:
        api_key: the single key of ``server.api_key`` (principal ``"default"``).
        api_keys: ``{principal name: key}`` from ``server.api_keys``.
    """

    def __init__(self, api_key: str | None = None, api_keys: dict[str, str] | None = None,
                 throttle: FailureThrottle | None = None):
        keys = dict(api_keys or {})
        if api_key:
            keys.setdefault(DEFAULT_PRINCIPAL, api_key)
        # compare digests: equal length, constant time, and no key kept in a plain lookup table
        self._keys = [(name, hashlib.sha256(k.encode()).digest()) for name, k in keys.items()]
        self.throttle = throttle or FailureThrottle()

    @property
    def open(self) -> bool:
        """True when no key is configured: every client is the ``local`` principal."""
        return not self._keys

    def principal(self, token: str | None, client: str) -> str:
        """The principal of ``token`` presented by ``client`` (an address).

        Raises:
            APIError: 429 while ``client`` is throttled, 401 for a missing or wrong key.
        """
        if self.open:
            return LOCAL_PRINCIPAL
        wait = self.throttle.retry_after(client)
        if wait > 0:
            raise APIError(429, f"too many failed authentication attempts; retry in {math.ceil(wait)} s",
                           type="rate_limit_error", code="auth_throttled",
                           headers={"Retry-After": str(math.ceil(wait))})
        digest = hashlib.sha256((token or "").encode()).digest()
        found = None
        for name, key in self._keys:  # every key is compared, so timing does not tell which matched
            if hmac.compare_digest(digest, key) and token:
                found = name
        if found is None:
            self.throttle.failed(client)
            raise APIError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                           type="invalid_request_error", code="invalid_api_key")
        return found


def bearer_token(conn: HTTPConnection) -> str | None:
    """The key a connection presents: ``Authorization: Bearer``, or on a websocket the key subprotocol."""
    scheme, _, token = (conn.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if conn.scope.get("type") == "websocket":
        for proto in conn.scope.get("subprotocols") or []:
            if proto.startswith(KEY_SUBPROTOCOL):
                return proto[len(KEY_SUBPROTOCOL):]
    return None


_AUTHENTICATORS: dict[int, tuple[Any, Authenticator]] = {}
_AUTH_LOCK = threading.Lock()


def authenticator_for(settings: Any) -> Authenticator:
    """The one authenticator of a settings object (HTTP routes and websockets share its throttle)."""
    with _AUTH_LOCK:
        entry = _AUTHENTICATORS.get(id(settings))
        if entry is None or entry[0] is not settings:
            server = getattr(settings, "server", None)
            auth = Authenticator(getattr(server, "api_key", None), getattr(server, "api_keys", None))
            entry = _AUTHENTICATORS[id(settings)] = (settings, auth)
        return entry[1]


def principal_of(conn: HTTPConnection, settings: Any = None) -> str:
    """Authenticate ``conn`` (a ``Request`` or ``WebSocket``) and return its principal.

    The result is cached on ``conn.state.principal`` and set as the current principal (see
    :func:`omni_agent.principal.current_principal`). ``settings`` defaults to ``conn.app.state.settings``.

    Raises:
        APIError: 401 (missing/wrong key) or 429 (throttled after repeated failures).
    """
    cached = getattr(conn.state, "principal", None)
    if cached is not None:
        set_principal(cached)
        return cached
    if settings is None:
        settings = conn.app.state.settings
    client = conn.client.host if conn.client is not None else "unknown"
    principal = authenticator_for(settings).principal(bearer_token(conn), client)
    conn.state.principal = principal
    set_principal(principal)
    return principal


def auth_dependency(settings: Any) -> Callable[..., Any]:
    """A FastAPI dependency that authenticates every request of a router (async: the principal it
    sets stays visible to the route, which runs in the same task)."""

    async def check(request: HTTPConnection) -> str:
        return principal_of(request, settings)

    return check


# --- keys out of the logs ------------------------------------------------------------------------
_QUERY_SECRET = re.compile(r"([?&](?:api[_-]?key|key|token|access[_-]?token|auth|authorization|secret|password)=)"
                           r"[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[^\s\"',]+", re.IGNORECASE)
_SUBPROTO = re.compile(r"(openai-insecure-api-key\.)[^\s\"',]+", re.IGNORECASE)
REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """``text`` with query-string secrets, bearer tokens and key subprotocols replaced."""
    for pattern in (_QUERY_SECRET, _BEARER, _SUBPROTO):
        text = pattern.sub(r"\1" + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and string arguments through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_log_redaction(names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error", "uvicorn",
                                                      "omni_agent")) -> None:
    """Add the redacting filter to these loggers (idempotent). uvicorn's access log writes the full
    path, query string included, so a key sent as ``?api_key=`` would otherwise land on disk."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
