"""Checkpoint serialisation that encodes each message once.

Every checkpoint holds the session's whole message list, and LangGraph's serializer rebuilds the
msgpack form of every message (a pydantic ``model_dump`` per message) on every write: after 100
turns that was ~1.8 ms of each turn, growing with the conversation. :class:`MessageEncodingCache`
keeps the encoded form of each message object that is still alive (weak references: an entry
goes when its message goes), so a write encodes only the messages that are new since the last one.

The bytes are exactly what :class:`JsonPlusSerializer` writes (the same msgpack extension, built by
its own encoder), so reading, older databases and LangGraph's own tools are unaffected.

The cache is keyed by object identity. That is sound because a message in the graph state is
never changed in place: LangGraph's ``add_messages`` replaces a message by id with a new object,
and the in-memory checkpoint cache (:mod:`omni_agent.agent.checkpoint_cache`) already shares these
objects between runs. Code that must edit a message builds a new one (``model_copy``). The one edit
LangGraph makes in place, giving an id-less message its id, happens before a message has an id, so
id-less messages are never cached (a pending write may encode one before the reducer names it).
"""

from __future__ import annotations

import weakref
from typing import Any

import ormsgpack
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

# the option set LangGraph's own msgpack encoder uses; checked at import so an upgrade that renames
# it fails loudly here instead of writing different bytes
_OPTION = jsonplus._option
_DEFAULT = jsonplus._msgpack_default


class MessageEncodingCache(JsonPlusSerializer):
    """``JsonPlusSerializer`` that reuses the encoding of messages it has encoded before."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoded: dict[int, tuple[weakref.ref, ormsgpack.Ext]] = {}
        self.hits = 0  # reused encodings (for tests and profiling)

    @property
    def cached(self) -> int:
        """How many message encodings are held (no ``__len__``: LangGraph tests ``serde or default``)."""
        return len(self._encoded)

    def _forget(self, key: int, ref: weakref.ref) -> None:
        entry = self._encoded.get(key)
        if entry is not None and entry[0] is ref:  # not a newer object that got the same id
            del self._encoded[key]

    def _default(self, obj: Any) -> Any:
        if not isinstance(obj, BaseMessage) or obj.id is None:
            return _DEFAULT(obj)  # id-less: add_messages will still assign its id in place
        key = id(obj)
        entry = self._encoded.get(key)
        if entry is not None and entry[0]() is obj:
            self.hits += 1
            return entry[1]
        ext = _DEFAULT(obj)
        ref = weakref.ref(obj, lambda r, key=key: self._forget(key, r))
        self._encoded[key] = (ref, ext)
        return ext

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, (bytes, bytearray)):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=self._default, option=_OPTION)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # the same fallback (pickle or the error) as LangGraph's
