"""Who a request acts for: the principal, carried in a context variable through the whole response.

A principal is the identity behind an API key (``server.api_keys`` names one per key; the single
``server.api_key`` is ``"default"``); without keys every client is the one ``"local"`` principal.
:mod:`omni_agent.server.auth` decides the principal of a request and enters :func:`acting_as`; code
below it (the artifact store, the file store, session ids) reads :func:`current_principal`, so
ownership needs no extra argument through the agent graph. Context variables follow ``await``,
tasks created inside and ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

LOCAL_PRINCIPAL = "local"  # every client of a server without API keys
DEFAULT_PRINCIPAL = "default"  # the holder of the single ``server.api_key``
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # no "/" (the session-id separator), safe in file metadata

_CURRENT: ContextVar[str | None] = ContextVar("omni_agent_principal", default=None)


def current_principal() -> str | None:
    """The principal the running request acts for; None outside any request (CLI, tests)."""
    return _CURRENT.get()


@contextlib.contextmanager
def acting_as(principal: str) -> Iterator[None]:
    """Run the block (and every task it creates) on behalf of ``principal``."""
    token = _CURRENT.set(principal)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def set_principal(principal: str) -> None:
    """Set the principal for the rest of the current task (an HTTP request's task)."""
    _CURRENT.set(principal)


def scoped_session_id(principal: str, session_id: str) -> str:
    """The agent-graph thread id of a client-chosen session id: a session id alone never reaches
    another principal's conversation (``alice``'s ``"s1"`` and ``bob``'s ``"s1"`` are different)."""
    return f"{principal}/{session_id}"


def owns(owner: str | None, principal: str | None) -> bool:
    """Whether ``principal`` may read something owned by ``owner``.

    In-process callers outside any request (no principal: the CLI, benchmarks) read everything.
    Unowned things (made outside any request, or stored before owners existed) belong to the
    machine's user: readable by the ``local`` principal of a server without keys, never by a keyed
    principal. Otherwise only the owner reads.
    """
    if principal is None:
        return True
    if owner is None:
        return principal == LOCAL_PRINCIPAL
    return owner == principal
