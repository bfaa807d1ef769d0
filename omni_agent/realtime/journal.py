"""Durable realtime sessions: numbered server events for replay, and conversation items as they complete.

Sessions opened with ``?session_id=`` are journaled to one SQLite file (``realtime.journal_db``):

- every server event gets the next number of its session and is stored with its ``event_id``; a
  client that reconnects with ``?session_id=...&last_event_id=...`` gets every later event replayed
  (after a restart too). Each session keeps its latest ``replay_bytes`` of events;
- each conversation item is stored when it is added and again when it completes, truncates or is
  deleted, with its audio (16-bit), so a reconnect after a crash restores the conversation; an item
  still ``in_progress`` at restore is marked ``incomplete`` and a response that never sent its
  ``response.done`` gets one (``status: incomplete``, error ``server_restarted``).

Writes go through a queue to one writer thread that commits every few milliseconds (WAL mode), so
the event loop never waits on the disk and ``kill -9`` loses at most the last few milliseconds.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.005
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (sid TEXT, seq INTEGER, event_id TEXT, data TEXT, PRIMARY KEY (sid, seq));
CREATE INDEX IF NOT EXISTS events_by_id ON events (sid, event_id);
CREATE TABLE IF NOT EXISTS items (sid TEXT, item_id TEXT, item TEXT, input_audio BLOB, output_audio BLOB,
                                  heard_text TEXT, PRIMARY KEY (sid, item_id));
CREATE TABLE IF NOT EXISTS item_order (sid TEXT PRIMARY KEY, ids TEXT, context_start INTEGER);
"""


def _pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def _float(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, "<i2").astype(np.float32) / 32767


class Journal:
    """The journal file (``":memory:"`` for tests); one writer thread, reads on the caller's thread."""

    def __init__(self, path: str | Path, replay_bytes: int = 16 * 2**20) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.replay_bytes = replay_bytes
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._sizes: dict[str, list[int]] = {}  # sid -> [bytes kept, lowest seq kept]
        self._writer = threading.Thread(target=self._write_loop, name="realtime-journal", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------ writing

    def _write_loop(self) -> None:
        while True:
            ops = [self._q.get()]
            try:
                while True:
                    ops.append(self._q.get(timeout=COMMIT_EVERY_S))
                    if len(ops) >= 256:
                        break
            except queue.Empty:
                pass
            stop = any(op is None for op in ops)
            with self._lock:
                try:
                    self._db.execute("BEGIN")
                    for op in ops:
                        if isinstance(op, tuple):
                            self._db.execute(*op)
                    self._db.execute("COMMIT")
                except Exception:  # a failed batch is logged; the writer goes on with the next one
                    log.exception("realtime journal write failed")
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            for op in ops:
                if isinstance(op, threading.Event):
                    op.set()
            if stop:
                return

    def _put(self, sql: str, args: tuple) -> None:
        self._q.put((sql, args))

    def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done = threading.Event()
        self._q.put(done)
        if not done.wait(10):
            raise TimeoutError("the realtime journal writer did not catch up within 10 s")

    def event(self, sid: str, seq: int, event_id: str, data: str) -> None:
        self._put("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)", (sid, seq, event_id, data))
        kept = self._sizes.setdefault(sid, [0, seq])
        kept[0] += len(data)
        if kept[0] > self.replay_bytes:  # keep the newest replay_bytes: drop the oldest half
            cut = kept[1] + max(1, (seq - kept[1]) // 2)
            self._put("DELETE FROM events WHERE sid = ? AND seq < ?", (sid, cut))
            kept[0], kept[1] = kept[0] // 2, cut

    def item(self, sid: str, item: Any) -> None:
        """Store an item's current state (json, audio, heard text)."""
        inp = _pcm16(item.input_audio) if item.input_audio is not None else None
        out = _pcm16(np.concatenate(item.output_audio)) if item.output_audio else None
        self._put("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                  (sid, item.id, json.dumps(item.to_json()), inp, out, item.heard_text))

    def order(self, sid: str, ids: list[str], context_start: int) -> None:
        self._put("INSERT OR REPLACE INTO item_order VALUES (?, ?, ?)", (sid, json.dumps(ids), context_start))

    def close(self) -> None:
        self._q.put(None)
        self._writer.join(5)
        self._db.close()

    # ------------------------------------------------------------------------------------ reading

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def last_seq(self, sid: str) -> int:
        rows = self._read("SELECT MAX(seq) FROM events WHERE sid = ?", (sid,))
        return rows[0][0] or 0

    def replay_after(self, sid: str, event_id: str) -> list[str] | None:
        """Events after ``event_id`` in order (None: that event is unknown or no longer kept)."""
        rows = self._read("SELECT seq FROM events WHERE sid = ? AND event_id = ?", (sid, event_id))
        if not rows:
            return None
        return [r[0] for r in self._read("SELECT data FROM events WHERE sid = ? AND seq > ? ORDER BY seq",
                                         (sid, rows[0][0]))]

    def open_responses(self, sid: str) -> list[dict[str, Any]]:
        """Responses created but never done (the server stopped while they ran)."""
        created: dict[str, dict[str, Any]] = {}
        for (data,) in self._read("SELECT data FROM events WHERE sid = ? AND data LIKE '%\"type\":\"response.%' "
                                  "ORDER BY seq", (sid,)):
            ev = json.loads(data)
            if ev["type"] == "response.created":
                created[ev["response"]["id"]] = ev["response"]
            elif ev["type"] == "response.done":
                created.pop(ev["response"]["id"], None)
        return list(created.values())

    def streamed_text(self, sid: str, item_id: str) -> str:
        """The text and transcript deltas sent for one item, joined."""
        out = []
        for (data,) in self._read("SELECT data FROM events WHERE sid = ? AND data LIKE ? ORDER BY seq",
                                  (sid, f'%"item_id":"{item_id}"%')):
            ev = json.loads(data)
            if ev["type"] in ("response.output_text.delta", "response.text.delta",
                              "response.output_audio_transcript.delta", "response.audio_transcript.delta"):
                out.append(ev["delta"])
        return "".join(out)

    def items(self, sid: str) -> tuple[list[dict[str, Any]], int]:
        """(stored items in conversation order, context start); each ``{"item", "input_audio", ...}``."""
        order = self._read("SELECT ids, context_start FROM item_order WHERE sid = ?", (sid,))
        if not order:
            return [], 0
        ids, start = json.loads(order[0][0]), order[0][1]
        rows = {r[0]: r for r in self._read(
            "SELECT item_id, item, input_audio, output_audio, heard_text FROM items WHERE sid = ?", (sid,))}
        out = []
        for iid in ids:
            if iid in rows:
                _, item, inp, outp, heard = rows[iid]
                out.append({"item": json.loads(item), "input_audio": _float(inp), "output_audio": _float(outp),
                            "heard_text": heard})
        return out, start


_ITEM_EVENTS = ("conversation.item.added", "conversation.item.done", "conversation.item.truncated",
                "response.content_part.added",
                "conversation.item.input_audio_transcription.completed")  # output items: at conversation.item.done


class SessionLog:
    """One session's view of the journal: numbers its events, stores its items, restores and replays."""

    def __init__(self, journal: Journal, sid: str) -> None:
        self.journal, self.sid = journal, sid
        self.seq = journal.last_seq(sid)

    def record(self, event: Any, data: str | None, conversation: Any) -> None:
        """Number and store one server event (``data`` None: not sent in this flavour, still numbered
        for the items it touches); store the items it adds or completes."""
        if data is not None:
            self.seq += 1
            self.journal.event(self.sid, self.seq, event.event_id, data)
        kind = event.type
        if kind in _ITEM_EVENTS or kind == "conversation.item.deleted":
            iid = event.item["id"] if isinstance(getattr(event, "item", None), dict) else event.item_id
            item = conversation.get(iid)
            if item is not None:
                self.journal.item(self.sid, item)
            if kind in ("conversation.item.added", "conversation.item.deleted"):
                self.journal.order(self.sid, [i.id for i in conversation.items], conversation.context_start)

    def save_order(self, conversation: Any) -> None:
        self.journal.order(self.sid, [i.id for i in conversation.items], conversation.context_start)

    def restore(self, conversation: Any, make_item: Any) -> list[Any]:
        """Put the stored items back into ``conversation``; returns those that were still in progress
        (now ``incomplete``)."""
        stored, start = self.journal.items(self.sid)
        interrupted = []
        for row in stored:
            item = make_item(row)
            if item.status == "in_progress":
                item.status = "incomplete"
                text = self.journal.streamed_text(self.sid, item.id)  # what was streamed before the stop
                for part in item.content:
                    part["text" if part["type"] == "output_text" else "transcript"] = text
                interrupted.append(item)
                self.journal.item(self.sid, item)
            conversation.items.append(item)
        conversation.context_start = min(start, len(conversation.items))
        return interrupted

    def open_responses(self) -> list[dict[str, Any]]:
        return self.journal.open_responses(self.sid)

    def replay_after(self, event_id: str) -> list[str] | None:
        return self.journal.replay_after(self.sid, event_id)
