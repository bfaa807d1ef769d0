"""Fault suite, issue 21 items 2 and 3: start-up readiness and the sessions database.

Every case runs the real server (uvicorn on 127.0.0.1, the agent graph, the tiny engine) and asserts
the clear error (503 ``session_store_unavailable``, never a 500), that the server keeps serving, and
that a broken file is reported, moved aside and never served again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from omni_agent.agent import persistence
from omni_agent.agent.responder import AgentResponder
from omni_agent.engine import AsyncEngine
from omni_agent.realtime.responder import Conversation, ResponseFinished, ResponseOptions
from omni_agent.server.app import create_app
from omni_agent.settings import Settings
from tests.test_http_api import start_app

pytestmark = pytest.mark.timeout(180)


def settings_for(db: Path | str) -> Settings:
    return Settings.model_validate({"engine": {"kv_cache_mb": 16, "default_max_tokens": 2},
                                    "agent": {"checkpoint_db": str(db)}})


@pytest.fixture(scope="module")
def engine() -> AsyncEngine:
    return AsyncEngine.from_settings(settings_for(":memory:"))


@contextlib.contextmanager
def serving(db: Path | str, engine: AsyncEngine):
    app = create_app(settings_for(db), engine)
    server, thread, url = start_app(app)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(15)


def chat(url: str, text: str = "hi", user: str | None = None) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 2, "temperature": 0}
    if user:
        body["user"] = user
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def assert_clear_503(r: httpx.Response, words: str) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "session_store_unavailable" and words in err["message"], err
    assert r.headers.get("retry-after")


async def test_concurrent_first_responses_wait_for_the_one_open(tmp_path, engine):
    """The race of the issue: the opener was cleared before the open finished (9 of 10 failed)."""
    r = AgentResponder.build(settings_for(tmp_path / "s.sqlite"), engine, image_tools=False)
    try:
        async def one(i: int) -> ResponseFinished:
            conv = Conversation(messages=[{"role": "user", "content": f"hello {i}"}])
            events = [ev async for ev in r.respond(conv, ResponseOptions(modalities=("text",), max_output_tokens=2,
                                                                         metadata={"session_id": f"s{i}"}),
                                                   asyncio.Event())]
            return events[-1]

        finals = await asyncio.gather(*(one(i) for i in range(10)))
        assert all(f.status in ("completed", "incomplete") for f in finals), [f.reason for f in finals]
        assert (await r.health())["ok"]
    finally:
        await r.aclose()
        await engine.shutdown()


def test_store_is_open_before_the_first_request(tmp_path, engine):
    with serving(tmp_path / "s.sqlite", engine) as (url, app):
        assert app.state.responder.store.ready  # opened by the lifespan, before any request
        with ThreadPoolExecutor(10) as pool:
            codes = [r.status_code for r in pool.map(lambda i: chat(url, f"q{i}", user=f"u{i}"), range(10))]
        assert codes == [200] * 10
        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok" and health["sessions_store"]["ok"]


def test_garbage_file_is_reported_moved_aside_and_replaced(tmp_path, engine, caplog):
    db = tmp_path / "s.sqlite"
    db.write_bytes(b"this is not a database " * 400)
    with caplog.at_level(logging.ERROR, logger="omni_agent.agent.persistence"), serving(db, engine) as (url, _):
        assert chat(url, user="after-garbage").status_code == 200
        assert httpx.get(url + "/health").json()["status"] == "ok"
    moved = list(tmp_path.glob("s.sqlite.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not a database")
    assert any("corrupt" in r.getMessage() and "moved it to" in r.getMessage() for r in caplog.records)


def test_unusable_path_fails_loudly_and_is_retried(tmp_path, engine, monkeypatch):
    monkeypatch.setattr(persistence, "STORE_RETRY_S", 0.2)
    db = tmp_path / "s.sqlite"
    db.mkdir()  # a directory where the file should be
    with serving(db, engine) as (url, _):
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert "is a directory" in health.json()["sessions_store"]["error"]
        t0 = time.perf_counter()
        assert_clear_503(chat(url, user="u1"), "is a directory")
        assert time.perf_counter() - t0 < 2  # refused at once, not after a timeout
        assert httpx.get(url + "/v1/models").status_code == 200  # the rest of the server serves
        db.rmdir()  # the operator fixes it: the next try after the retry interval opens it
        time.sleep(0.3)
        assert chat(url, user="u1").status_code == 200
        assert httpx.get(url + "/health").json()["status"] == "ok"


def test_locked_database_is_a_clear_503_and_recovers(tmp_path, engine, monkeypatch):
    monkeypatch.setattr(persistence, "BUSY_TIMEOUT_MS", 300)
    db = tmp_path / "s.sqlite"
    with serving(db, engine) as (url, _):
        assert chat(url, user="before").status_code == 200
        other = sqlite3.connect(db, timeout=0.1)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            t0 = time.perf_counter()
            assert_clear_503(chat(url, user="while-locked"), "locked")
            assert time.perf_counter() - t0 < 5
        finally:
            other.rollback()
            other.close()
        assert chat(url, user="after").status_code == 200
        assert httpx.get(url + "/health").json()["status"] == "ok"


def test_read_only_database_is_a_clear_503(tmp_path, engine):
    with serving(tmp_path / "s.sqlite", engine) as (url, app):
        conn = app.state.responder.runner.graph.checkpointer.conn
        fut = asyncio.run_coroutine_threadsafe(conn.execute("PRAGMA query_only=1"), engine._loop)
        fut.result(5)  # the connection now refuses writes, as a read-only file does
        assert_clear_503(chat(url, user="ro"), "read-only")
        asyncio.run_coroutine_threadsafe(conn.execute("PRAGMA query_only=0"), engine._loop).result(5)
        assert chat(url, user="ro").status_code == 200


def _corrupt(db: Path) -> None:
    raw = bytearray(db.read_bytes())
    page = 4096
    for start in range(page, len(raw), page):  # every page after the header page: b-tree pages destroyed
        raw[start:start + 64] = b"\xa5" * 64
    db.write_bytes(bytes(raw))


def test_corruption_while_serving_is_never_served_again(tmp_path, engine, caplog):
    db = tmp_path / "s.sqlite"
    with caplog.at_level(logging.ERROR), serving(db, engine) as (url, app):
        for i in range(4):
            assert chat(url, f"remember {i}", user="victim").status_code == 200
        conn = app.state.responder.runner.graph.checkpointer.conn
        asyncio.run_coroutine_threadsafe(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"), engine._loop).result(5)
        _corrupt(db)
        codes = [chat(url, f"after {i}", user="victim").status_code for i in range(3)]
        assert set(codes) <= {200, 503}, codes  # a clear answer each time, never a 500
    # shut down: whatever went bad is moved aside, with a log line
    assert list(tmp_path.glob("s.sqlite.corrupt-*")), sorted(p.name for p in tmp_path.iterdir())
    assert any("corrupt" in r.getMessage() or "failed its check" in r.getMessage() for r in caplog.records)
    with serving(db, engine) as (url, _):  # the restart opens a sound database
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert chat(url, "fresh", user="victim").status_code == 200
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
