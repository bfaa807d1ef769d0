"""SQLite checkpoints keyed by session id (LangGraph ``thread_id``).

One file holds every session; a restarted server opens the same file and a session picks up its
conversation and any pending confirmation. Past one machine, swap in LangGraph's Postgres saver.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from omni_agent.agent.checkpoint_cache import CachingSqliteSaver


async def open_checkpointer(path: str | Path) -> AsyncSqliteSaver:
    """Open (creating if needed) the checkpoint database; close with :func:`close_checkpointer`."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path)
    # WAL: readers (state lookups) do not block the writer; NORMAL sync is durable across app crashes.
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    saver = CachingSqliteSaver(conn)  # latest checkpoint per session also in memory: reads stay flat in turns
    await saver.setup()
    return saver


async def close_checkpointer(saver: AsyncSqliteSaver) -> None:
    await saver.conn.close()


def thread_config(session_id: str, *, recursion_limit: int = 100) -> dict:
    """The LangGraph config for one session."""
    return {"configurable": {"thread_id": session_id}, "recursion_limit": recursion_limit}
