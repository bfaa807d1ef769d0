"""SQLite checkpoints keyed by session id (LangGraph ``thread_id``).

One file holds every session; a restarted server opens the same file and a session picks up its
conversation and any pending confirmation. Past one machine, swap in LangGraph's Postgres saver.

Opening is defensive, because a broken file must never be served or written back:

- WAL journal (readers never block the writer) with ``busy_timeout`` (a writer waits this long for
  a lock, then the request gets a clear "busy" error instead of hanging);
- ``PRAGMA integrity_check`` before first use: a corrupt file or one that is not a database at all
  is logged, moved aside (``<name>.corrupt-<UTC time>``, with its ``-wal``/``-shm``) and a fresh
  database takes its place; the old one is kept for inspection, never reopened;
- a path that cannot hold a database (a directory, a read-only file or folder) raises
  :class:`SessionStoreError` naming the path and the reason;
- closing runs ``PRAGMA quick_check`` first (on a fresh connection, past the serving one's page
  cache): a file that went bad while serving is moved aside after the connection closes, so the
  next start never serves it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from omni_agent.agent.checkpoint_cache import CachingSqliteSaver

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000  # another process holding the write lock longer than this is an outage, not a wait
STORE_RETRY_S = 2.0  # a failed sessions database is reopened at most this often (each try touches the disk)
_SIDECARS = ("-wal", "-shm", "-journal")


class SessionStoreError(RuntimeError):
    """The sessions database cannot be used (path unusable, read-only, locked, corrupt)."""


def is_corruption(error: BaseException) -> bool:
    """True for SQLite errors that mean the file itself is damaged (not a lock or a full disk)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text
                                                         or "corrupt" in text)


def describe(error: BaseException, path: str | Path) -> str:
    """A one-line, user-facing description of a sessions-database error."""
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return f"the sessions database {path} is locked by another process (waited {BUSY_TIMEOUT_MS} ms)"
    if "readonly" in text or "read-only" in text:
        return f"the sessions database {path} is read-only"
    if is_corruption(error):
        return f"the sessions database {path} is corrupt ({error})"
    return f"the sessions database {path} failed: {type(error).__name__}: {error}"


def quarantine(path: str | Path) -> Path:
    """Move a damaged database (and its WAL/shm files) aside; returns the new name of the main file."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    for suffix in ("", *_SIDECARS):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    return target


def _prepare(p: Path) -> None:
    """The folder exists and the path is not a directory (stat calls only)."""
    if p.is_dir():
        raise SessionStoreError(f"the sessions database {p} is a directory, not a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SessionStoreError(f"cannot create the folder of the sessions database {p}: {e}") from None


def _exists(path: str) -> bool:
    return Path(path).exists()


async def _integrity(conn: aiosqlite.Connection, pragma: str = "integrity_check") -> str:
    """``"ok"`` or the first problem SQLite reports (a corrupt or non-database file raises instead)."""
    async with conn.execute(f"PRAGMA {pragma}") as cur:
        rows = await cur.fetchall()
    return "ok" if [r[0] for r in rows] == ["ok"] else "; ".join(str(r[0]) for r in rows[:3])


async def _connect_checked(path: str) -> aiosqlite.Connection:
    """Connect, set the pragmas and verify the file; raises ``sqlite3.DatabaseError`` when corrupt."""
    conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            problem = await _integrity(conn)
            if problem != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {problem} (corrupt)")
        # WAL: readers (state lookups) do not block the writer; NORMAL sync is durable across app crashes.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_checkpointer(path: str | Path) -> AsyncSqliteSaver:
    """Open (creating if needed) the checkpoint database; close with :func:`close_checkpointer`.

    Raises:
        SessionStoreError: the path cannot hold a database (a directory, read-only, locked).
    """
    path = str(path)
    if path != ":memory:":
        _prepare(Path(path))
    try:
        try:
            conn = await _connect_checked(path)
        except sqlite3.DatabaseError as e:
            if not is_corruption(e) or path == ":memory:":
                raise
            moved = quarantine(path)
            log.error("the sessions database %s is corrupt (%s); moved it to %s and starting a new one",
                      path, e, moved)
            conn = await _connect_checked(path)
        saver = CachingSqliteSaver(conn)  # latest checkpoint per session also in memory: reads stay flat
        try:
            await saver.setup()  # creates the tables: also proves the file is writable
        except BaseException:
            await conn.close()
            raise
    except sqlite3.Error as e:
        raise SessionStoreError(describe(e, path)) from None
    return saver


async def close_checkpointer(saver: AsyncSqliteSaver) -> None:
    """Close the database; a file that went corrupt while serving is moved aside after closing.

    The check runs on a fresh connection: the serving one answers from its page cache and would
    call a file whose pages were damaged underneath it sound.
    """
    conn = saver.conn
    path = ""
    with contextlib.suppress(sqlite3.Error, ValueError):  # already closed: nothing to judge
        async with conn.execute("PRAGMA database_list") as cur:
            path = next((r[2] for r in await cur.fetchall() if r[1] == "main"), "") or ""  # "" for :memory:
    problem = await asyncio.to_thread(_fresh_check, path) if path else "ok"
    await conn.close()
    if problem != "ok" and _exists(path):
        moved = quarantine(path)
        log.error("the sessions database %s failed its check at shutdown (%s); moved it to %s",
                  path, problem, moved)


def _fresh_check(path: str) -> str:
    """``PRAGMA quick_check`` of ``path`` through a new connection (``"ok"`` or the problem)."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e) if is_corruption(e) else "ok"  # busy or locked says nothing about the file
    return "ok" if [r[0] for r in rows] == ["ok"] else "; ".join(str(r[0]) for r in rows[:3])


class SessionStore:
    """The sessions database as a service for the server: opened once (concurrent callers wait for
    that one open), retried at most every ``STORE_RETRY_S`` while it fails, and taken out of service
    when it turns out corrupt (the next :meth:`ensure` reopens it: moved aside, fresh file).

    Args:
        path: the SQLite file.
        on_open: called with each newly opened saver (the responder builds its graph on it).
    """

    def __init__(self, path: str | Path, on_open: Callable[[AsyncSqliteSaver], None]):
        self.path, self._on_open = str(path), on_open
        self.saver: AsyncSqliteSaver | None = None
        self.ready = False
        self.error: str | None = None
        self._last_try = float("-inf")
        self._lock = asyncio.Lock()

    async def ensure(self, *, force: bool = False) -> None:
        """Open the database unless it is open; ``SessionStoreError`` while it cannot be."""
        if self.ready:
            return
        async with self._lock:  # concurrent first requests wait for the one open, never skip it
            if self.ready:
                return
            now = time.monotonic()
            if self.error is not None and not force and now - self._last_try < STORE_RETRY_S:
                raise SessionStoreError(self.error)
            self._last_try = now
            try:
                await self.close()  # a reopen after a failure: the old connection goes first
                saver = await open_checkpointer(self.path)
                self._on_open(saver)
            except SessionStoreError as e:
                self.error = str(e)
            except Exception as e:  # noqa: BLE001 - any open failure is reported, not half-opened
                self.error = describe(e, self.path)
            else:
                self.saver, self.ready, self.error = saver, True, None
                return
            log.error("sessions database unavailable: %s (retried on the next response)", self.error)
            raise SessionStoreError(self.error)

    async def health(self) -> dict[str, Any]:
        """``{"ok", "path", "error"}``; a failed store is retried here too (throttled)."""
        if not self.ready:
            with contextlib.suppress(SessionStoreError):
                await self.ensure()
        return {"ok": self.ready, "path": self.path, "error": self.error}

    def failed(self, error: BaseException) -> str:
        """A database error while serving: its one-line description; corruption also takes the store
        out of service until the next :meth:`ensure`."""
        message = describe(error, self.path)
        if is_corruption(error) and self.ready:
            log.error("%s: closing it; a new database is opened on the next response", message)
            self.ready, self.error, self._last_try = False, message, float("-inf")
        return message

    async def close(self) -> None:
        saver, self.saver, self.ready = self.saver, None, False
        if saver is not None:
            with contextlib.suppress(Exception):
                await close_checkpointer(saver)


def thread_config(session_id: str, *, recursion_limit: int = 100) -> dict:
    """The LangGraph config for one session."""
    return {"configurable": {"thread_id": session_id}, "recursion_limit": recursion_limit}
