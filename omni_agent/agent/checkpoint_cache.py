"""The SQLite checkpointer with each session's latest checkpoint kept in memory (write-through).

LangGraph reads a session's latest checkpoint at the start of every run; from SQLite that means
deserialising the whole history (every message rebuilt as a pydantic object), so the graph's own
cost grew with the conversation (6.8 ms per tool turn at the start, 17.7 ms after 100 turns). This
saver writes every checkpoint to SQLite as before and also keeps the latest one per session
(LRU, :data:`MAX_SESSIONS`), so the read is a dictionary lookup. Anything the cache cannot answer
exactly (an older checkpoint id, a listing, pending writes) goes to SQLite; pending writes for a
cached checkpoint drop its entry, so the next read sees them from the database.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple, copy_checkpoint, get_checkpoint_id
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from omni_agent.agent.checkpoint_serde import MessageEncodingCache

MAX_SESSIONS = 512


def _key(config: dict[str, Any]) -> tuple[str, str]:
    c = config["configurable"]
    return str(c["thread_id"]), str(c.get("checkpoint_ns", ""))


class CachingSqliteSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` + an in-memory copy of each session's latest checkpoint; writes encode
    only the messages that are new (:class:`MessageEncodingCache`, unless ``serde`` is given)."""

    def __init__(self, conn: Any, *args: Any, max_sessions: int = MAX_SESSIONS, **kwargs: Any) -> None:
        kwargs.setdefault("serde", MessageEncodingCache())
        super().__init__(conn, *args, **kwargs)
        self.max_sessions = max_sessions
        self._latest: OrderedDict[tuple[str, str], CheckpointTuple] = OrderedDict()

    def _remember(self, key: tuple[str, str], tup: CheckpointTuple) -> None:
        self._latest[key] = tup
        self._latest.move_to_end(key)
        while len(self._latest) > self.max_sessions:
            self._latest.popitem(last=False)

    async def aget_tuple(self, config: dict[str, Any]) -> CheckpointTuple | None:
        key, wanted = _key(config), get_checkpoint_id(config)
        cached = self._latest.get(key)
        if cached is not None and wanted in (None, cached.config["configurable"]["checkpoint_id"]):
            self._latest.move_to_end(key)
            # the run builds its channels from this: a copy, so the cached values stay as written
            return cached._replace(checkpoint=copy_checkpoint(cached.checkpoint))
        tup = await super().aget_tuple(config)
        if tup is not None and wanted is None and not tup.pending_writes:
            self._remember(key, tup._replace(checkpoint=copy_checkpoint(tup.checkpoint)))
        return tup

    async def aput(self, config: dict[str, Any], checkpoint: Any, metadata: Any, new_versions: Any) -> dict[str, Any]:
        new_config = await super().aput(config, checkpoint, metadata, new_versions)
        parent = config if config["configurable"].get("checkpoint_id") else None
        self._remember(_key(config), CheckpointTuple(config=new_config, checkpoint=copy_checkpoint(checkpoint),
                                                     metadata=metadata, parent_config=parent, pending_writes=[]))
        return new_config

    async def aput_writes(self, config: dict[str, Any], writes: Any, task_id: str, task_path: str = "") -> None:
        await super().aput_writes(config, writes, task_id, task_path)
        self._latest.pop(_key(config), None)  # the database holds what a read must now return

    async def adelete_thread(self, thread_id: str) -> None:
        await super().adelete_thread(thread_id)
        for key in [k for k in self._latest if k[0] == str(thread_id)]:
            del self._latest[key]
