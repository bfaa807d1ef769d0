"""Fault suite, issue 21 items 4, 6, 7 and 9 (HTTP): limits, auth, ownership, safe defaults.

One live server (uvicorn on 127.0.0.1, the agent graph, the tiny engine) with two principals. Each
bad request must get a clear 4xx in OpenAI's error format while healthy streams running beside it
complete, and the process memory must stay within ``RSS_BOUND_MB`` of where it started.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from omni_agent.bench.faults import bomb_png, chunked_post
from omni_agent.engine import AsyncEngine
from omni_agent.principal import acting_as, scoped_session_id
from omni_agent.server.app import create_app
from omni_agent.server.files import files_router
from omni_agent.settings import Settings
from tests.test_http_api import on_server, start_app

pytestmark = pytest.mark.timeout(180)
ALICE, BOB = "alice-key-0001", "bob-key-00002"
LIMIT = 2 * 2**20  # this server's body limit
RSS_BOUND_MB = 64  # a refused body must not cost more than this (it used to cost 745 MB for 5 MiB)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def settings(**server) -> Settings:
    return Settings.model_validate({
        "engine": {"kv_cache_mb": 16, "default_max_tokens": 4},
        "server": {"api_keys": {"alice": ALICE, "bob": BOB}, "max_request_bytes": LIMIT, **server},
        "agent": {"checkpoint_db": ":memory:"}})


@pytest.fixture(scope="module")
def live():
    s = settings()
    engine = AsyncEngine.from_settings(s)
    app = create_app(s, engine, extra_routers=[files_router(s)])
    from omni_agent.agent.artifacts import artifacts_router

    app.include_router(artifacts_router(app.state.responder.artifacts, s))
    server, thread, url = start_app(app)
    yield SimpleNamespace(url=url, app=app, engine=engine, responder=app.state.responder)
    server.should_exit = True
    thread.join(15)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_body(text: str = "hi", **kw) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0, **kw}


@contextlib.contextmanager
def healthy_beside(url: str, n: int = 4):
    """``n`` streaming completions running while the block sends bad requests; all must finish."""
    results: list[str] = []

    def one(i: int) -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", headers=auth(ALICE), timeout=120,
                          json=chat_body(f"healthy {i}", max_tokens=24, stream=True)) as r:
            body = "".join(r.iter_text())
        results.append("ok" if r.status_code == 200 and "[DONE]" in body and '"error"' not in body else body)

    pool = ThreadPoolExecutor(n)
    futures = [pool.submit(one, i) for i in range(n)]
    try:
        yield
    finally:
        for f in futures:
            f.result(timeout=120)
        pool.shutdown()
    assert results == ["ok"] * n, results


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"], err
    return err


def test_oversized_bodies_are_refused_at_once_with_bounded_memory(live):
    with healthy_beside(live.url):  # warm-up: the first streams allocate what every later one reuses
        pass
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a" * (20 * 2**20) + b'"}]}'
    before = rss_mb()
    with healthy_beside(live.url):
        t0 = time.perf_counter()
        r = httpx.post(live.url + "/v1/chat/completions", content=big, headers=auth(ALICE), timeout=30)
        assert_error(r, 413, "request_too_large")
        assert time.perf_counter() - t0 < 2
        # no Content-Length (chunked): counted as it arrives, refused the moment it passes the limit
        status, body = chunked_post(live.url, "/v1/chat/completions", ALICE, 3 * LIMIT)
        assert status == 413 and b"request_too_large" in body
        # under the byte limit but far over the context: refused after counting the limit only
        t0 = time.perf_counter()
        r = httpx.post(live.url + "/v1/chat/completions", json=chat_body("word " * (LIMIT // 6)),
                       headers=auth(ALICE), timeout=30)
        assert_error(r, 400, "context_length_exceeded")
        assert time.perf_counter() - t0 < 2
    assert rss_mb() - before < RSS_BOUND_MB


def test_decompression_bomb_and_bad_sampling_are_400(live):
    import base64

    url = "data:image/png;base64," + base64.b64encode(bomb_png()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is it?"}]
    with healthy_beside(live.url):
        r = httpx.post(live.url + "/v1/chat/completions", headers=auth(ALICE), timeout=30,
                       json={"model": "tiny", "messages": [{"role": "user", "content": content}]})
        assert "pixels" in assert_error(r, 400, "invalid_media")["message"]
        for knob in ({"repetition_penalty": 1e-300}, {"repetition_penalty": 1e300}, {"seed": 2**80}):
            r = httpx.post(live.url + "/v1/chat/completions", json=chat_body(**knob), headers=auth(ALICE), timeout=30)
            assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(knob)), r.text


def test_artifacts_need_a_key_and_belong_to_their_owner(live):
    with acting_as("alice"):
        ref = live.responder.artifacts.put(b"alice's recorded voice", "audio/wav", kind="input_audio")
    path = f"{live.url}/v1/artifacts/{ref.id}"
    assert_error(httpx.get(path), 401, "invalid_api_key")
    assert_error(httpx.get(path, headers=auth("wrong-key-000")), 401, "invalid_api_key")
    assert httpx.get(path, headers=auth(BOB)).status_code == 404  # same answer as an unknown id
    got = httpx.get(path, headers=auth(ALICE))
    assert got.status_code == 200 and got.content == b"alice's recorded voice"


def test_files_belong_to_their_uploader(live):
    up = httpx.post(live.url + "/v1/files", headers=auth(ALICE), files={"file": ("notes.txt", b"alice only")},
                    data={"purpose": "user_data"})
    assert up.status_code == 200
    fid = up.json()["id"]
    assert fid in [f["id"] for f in httpx.get(live.url + "/v1/files", headers=auth(ALICE)).json()["data"]]
    assert fid not in [f["id"] for f in httpx.get(live.url + "/v1/files", headers=auth(BOB)).json()["data"]]
    assert_error(httpx.get(f"{live.url}/v1/files/{fid}/content", headers=auth(BOB)), 404, "file_not_found")
    assert_error(httpx.delete(f"{live.url}/v1/files/{fid}", headers=auth(BOB)), 404, "file_not_found")
    assert_error(httpx.get(live.url + "/v1/files"), 401, "invalid_api_key")
    assert httpx.get(f"{live.url}/v1/files/{fid}/content", headers=auth(ALICE)).content == b"alice only"


def test_user_field_never_reaches_another_principals_session(live):
    r = httpx.post(live.url + "/v1/chat/completions", headers=auth(ALICE), timeout=60,
                   json=chat_body("my password is 1234", user="shared-name"))
    assert r.status_code == 200
    r = httpx.post(live.url + "/v1/chat/completions", headers={**auth(BOB), "X-Session-Id": "shared-name"},
                   timeout=60, json=chat_body("what did I say?"))
    assert r.status_code == 200
    alice = on_server(live, live.responder.runner.messages(scoped_session_id("alice", "shared-name")))
    bob = on_server(live, live.responder.runner.messages(scoped_session_id("bob", "shared-name")))
    assert [m.content for m in alice if m.type == "human"] == ["my password is 1234"]
    assert [m.content for m in bob if m.type == "human"] == ["what did I say?"]
    assert all("1234" not in str(m.content) for m in bob)


def test_cors_is_closed_unless_configured():
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = TestClient(create_app(settings(), SimpleNamespace(), responder=STUB))
    assert "access-control-allow-origin" not in closed.options("/v1/chat/completions", headers=preflight).headers
    plain = closed.get("/v1/models", headers={**auth(ALICE), "Origin": "https://evil.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    opened = TestClient(create_app(settings(allowed_origins=["https://app.example"]), SimpleNamespace(), responder=STUB))
    ok = opened.options("/v1/chat/completions", headers={**preflight, "Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in opened.options("/v1/chat/completions", headers=preflight).headers


def test_failed_auth_is_throttled_per_address():
    client = TestClient(create_app(settings(), SimpleNamespace(), responder=STUB))
    codes = [client.get("/v1/models", headers=auth(f"guess-{i:08d}")).status_code for i in range(10)]
    assert codes == [401] * 10
    r = client.get("/v1/models", headers=auth("guess-final"))
    assert_error(r, 429, "auth_throttled")
    assert 0 < int(r.headers["retry-after"]) <= 60
    assert client.get("/v1/models", headers=auth(ALICE)).status_code == 429  # the address waits, whatever it sends
    other = TestClient(create_app(settings(), SimpleNamespace(), responder=STUB))  # another server: its own counter
    assert other.get("/v1/models", headers=auth(ALICE)).status_code == 200


def test_keys_never_reach_the_access_log():
    app = create_app(settings(), SimpleNamespace(), responder=STUB)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info", lifespan="off"))
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Capture()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    logging.getLogger("uvicorn.access").addHandler(handler)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        for query in ("api_key=sk-SECRET-1", "key=sk-SECRET-2&x=1", "token=sk-SECRET-3"):
            r = httpx.get(f"http://127.0.0.1:{port}/v1/models?{query}", headers=auth("sk-SECRET-4"))
            assert r.status_code == 401  # a key in the query string is never accepted either
        time.sleep(0.1)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
        server.should_exit = True
        thread.join(10)
    assert len(lines) >= 3 and all("SECRET" not in line for line in lines), lines
    assert any("[REDACTED]" in line for line in lines)


async def _noop() -> None:
    return None


STUB = SimpleNamespace(aclose=_noop)  # routes that never reach the responder (auth, CORS, logs)


def test_a_wrong_websocket_key_counts_once_toward_the_throttle():
    """The realtime route authenticates the handshake once: 10 wrong keys are 401s, the 11th is throttled."""
    from starlette.testclient import WebSocketDenialResponse

    from omni_agent.realtime.testing import FakeResponder, make_app

    client = TestClient(make_app(settings(), FakeResponder()))
    codes = []
    for _ in range(11):
        with pytest.raises(WebSocketDenialResponse) as e, client.websocket_connect("/v1/realtime",
                                                                                    headers=auth("sk-wrong-key-1")):
            pass
        codes.append(e.value.status_code)
    assert codes == [401] * 10 + [429]  # counted once per attempt (twice would throttle at the 6th)
