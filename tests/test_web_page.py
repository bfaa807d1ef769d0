"""The web page in a real headless Chromium (Debian's, driven by Playwright) with a fake microphone.

The microphone is a WAV of espeak-ng speech played by Chromium's fake capture device, so the page's
real AudioWorklet path, the server's VAD and the realtime protocol all run. Screenshots land in
``out/test-artifacts/`` (look at them).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import BaseModel

from omni_agent.realtime.testing import SR, FakeResponder, LiveServer, espeak, make_app
from omni_agent.settings import Settings
from web import web_router

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "out" / "test-artifacts"
# What the machine's closed network and a root user need (see the env notes): no sandbox, no background fetches.
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
             "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]


def _mic_wav(path: Path, *segments: tuple[str, float]) -> Path:
    """Silence, then each (text, silence after) in turn, as the fake microphone's WAV."""
    parts = [np.zeros(int(0.5 * SR), np.float32)]
    for text, pause in segments:
        parts += [espeak(text), np.zeros(int(pause * SR), np.float32)]
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return path


@pytest.fixture
def browser_factory():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make setup` (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browsers = []

        def launch(mic: Path | None = None):
            args = list(BASE_ARGS)
            if mic is not None:
                args.append(f"--use-file-for-fake-audio-capture={mic}%noloop")
            b = pw.chromium.launch(executable_path=CHROMIUM, args=args)
            browsers.append(b)
            return b.new_page(bypass_csp=True)  # the test harness evaluates JS; the page itself never does

        yield launch
        for b in browsers:
            b.close()


def _serve(app, settings: Settings) -> LiveServer:
    app.include_router(web_router())
    srv = LiveServer(app)
    settings.server.allowed_origins = [srv.http]  # the page's own origin, as the README shows
    return srv


def _events(page, type_: str) -> list[dict]:
    return page.evaluate("t => window.omni.events.filter(e => e.type === t)", type_)


def _wait(page, expr: str, timeout: float = 60.0) -> None:
    page.wait_for_function(expr, timeout=timeout * 1000)


def _connect(page, url: str) -> None:
    page.goto(url)
    page.click("#connect")
    _wait(page, "window.omni.events.some(e => e.type === 'session.updated')", 30)


def test_page_is_served_with_its_modules(tmp_path):
    from fastapi.testclient import TestClient

    app = make_app(Settings(), FakeResponder())
    app.include_router(web_router())
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/web/app.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "realtime.js", "audio.js", "mic-worklet.js", "player-worklet.js", "style.css"):
        r = client.get(f"/web/{name}")
        assert r.status_code == 200, name
    assert client.get("/web/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/web/..%2F__init__.py").status_code == 404
    assert client.get("/web/nothing.js").status_code == 404


def test_voice_turn_and_barge_in_truncate_at_what_was_played(tmp_path, browser_factory):
    """Speak, hear the answer, speak over it: playback stops and the item is cut at the audio played."""
    mic = _mic_wav(tmp_path / "mic.wav", ("Hello, what can you do for me today?", 1.6),
                   ("Wait, stop please.", 3.0))
    settings = Settings()
    # 30 chunks of 0.4 s: a 12 s answer, generated much faster than it plays, so the barge-in lands mid-playback.
    responder = FakeResponder(steps=30, chunk_s=0.4, delay_s=0.01)
    with _serve(make_app(settings, responder), settings) as srv:
        page = browser_factory(mic)
        _connect(page, srv.http)
        page.click("#mic")
        _wait(page, "window.omni.truncations.length > 0", 60)
        _wait(page, "window.omni.events.filter(e => e.type === 'conversation.item.truncated').length > 0", 20)
        _wait(page, "window.omni.responses.length >= 2", 60)
        time.sleep(0.8)  # let the second answer play for a while
        page.evaluate("0")  # refresh state
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-voice.png"), full_page=True)

        cut = page.evaluate("window.omni.truncations[0]")
        truncated = _events(page, "conversation.item.truncated")
        responses = page.evaluate("window.omni.responses")
        played = page.evaluate("window.omni.playedMs")
    assert len(_events(page, "input_audio_buffer.speech_started")) >= 2
    # the first answer was heard, then cut while more had been received than played
    assert 200 < cut["audio_end_ms"] < cut["received_ms"], cut
    # the server's item holds exactly what the page played: one truncation, at the page's position
    assert [(t["item_id"], t["audio_end_ms"]) for t in truncated] == [(cut["item_id"], cut["audio_end_ms"])]
    second = responses[1]["output"][0]["id"]
    assert played.get(second, 0) > 0, played  # the answer to the second utterance was played too


class PayArgs(BaseModel):
    amount: float
    to: str


@dataclass
class _Chunk:
    pcm: np.ndarray
    text: str
    sentence_index: int


class _ToneTTS:
    """Speaks each text delta as 50 ms of tone: the agent test is about the page, not the voice."""

    sample_rate = SR

    async def stream(self, text, *, hidden=None, voice=None, cancel=None):
        i = 0
        async for delta in text:
            yield _Chunk(np.full(SR // 20, 0.05, np.float32), delta, i)
            i += 1
            await asyncio.sleep(0)


def test_image_question_approval_and_gallery(tmp_path, browser_factory):
    """Attach an image and ask about it; approve a risky tool from its card; see a drawing in the gallery."""
    from PIL import Image

    from omni_agent.agent.artifacts import ArtifactStore, artifacts_router
    from omni_agent.agent.graph import build_graph
    from omni_agent.agent.models import ScriptedChatModel, call
    from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.agent.runner import AgentRunner
    from omni_agent.agent.tools import Tool, ToolResult

    paid: list[dict] = []

    def pay(args, ctx):
        paid.append(args.model_dump())
        return ToolResult({"ok": True})

    def draw(args, ctx):
        ctx.progress({"step": 1, "total": 2, "fraction": 0.5, "message": "drawing: step 1/2"})
        ref = ctx.artifacts.put_image(Image.new("RGB", (64, 64), "blue"))
        return ToolResult({"image_id": ref.id}, artifacts=[ref])

    model = ScriptedChatModel(["It is a red square.", call("pay", amount=5, to="dan"), "Paid Dan.",
                               call("draw"), "Here is your drawing."])
    tools = [Tool("pay", "Pay someone.", PayArgs, pay, approval=True), Tool("draw", "Draw.", None, draw)]
    Image.new("RGB", (48, 48), "red").save(tmp_path / "red.png")
    settings = Settings()
    store = ArtifactStore()
    # Playwright's sync API owns this thread's event loop, so the database is opened (and closed) on another.
    with ThreadPoolExecutor(1) as pool:
        saver = pool.submit(asyncio.run, open_checkpointer(tmp_path / "s.sqlite")).result()
    try:
        responder = AgentResponder(AgentRunner(build_graph(model, tools, saver, tts=_ToneTTS(), artifacts=store)),
                                   store)
        app = make_app(settings, responder)
        app.include_router(artifacts_router(store, settings))
        with _serve(app, settings) as srv:
            page = browser_factory()
            _connect(page, srv.http)
            page.set_input_files("#media", str(tmp_path / "red.png"))
            _wait(page, "window.omni.events.some(e => e.type === 'conversation.item.added' && "
                        "(e.item.content || []).some(p => p.type === 'input_image'))", 20)
            page.fill("#text", "What is in the picture?")
            page.press("#text", "Enter")
            _wait(page, "window.omni.responses.length >= 1", 30)
            assert "red square" in page.inner_text("#transcript")

            page.fill("#text", "Pay Dan five dollars")
            page.press("#text", "Enter")
            page.wait_for_selector(".confirm button[data-ok='1']", timeout=30_000)
            assert paid == []  # nothing happens before the click
            page.click(".confirm button[data-ok='1']")
            _wait(page, "window.omni.responses.length >= 3", 30)
            assert paid == [{"amount": 5.0, "to": "dan"}]
            assert "Paid Dan." in page.inner_text("#transcript")

            page.fill("#text", "Draw me something")
            page.press("#text", "Enter")
            page.wait_for_selector("#gallery figure img[src^='blob:']", timeout=30_000)
            _wait(page, "window.omni.responses.length >= 4", 30)
            assert page.inner_text("#progress").split("\n") == ["draw done", "pay done"]
            assert any(e["message"] == "drawing: step 1/2" for e in _events(page, "omni.tool.progress"))
            assert page.inner_text("#gallery figcaption") == "Draw me something"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-agent.png"), full_page=True)
            # the image the page shows is the artifact's PNG, fetched with the page's credentials
            natural = page.evaluate("document.querySelector('#gallery img').naturalWidth")
            assert natural == 64
            image_q = model.requests[0]
    finally:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, close_checkpointer(saver)).result()
    assert any("image" in str(m).lower() for m in image_q.messages), image_q.messages


def test_a_cjk_font_is_installed_for_chinese_transcripts():
    fc = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=True).stdout
    assert "Noto Sans CJK" in fc, "fonts-noto-cjk is missing: run `make setup`"
