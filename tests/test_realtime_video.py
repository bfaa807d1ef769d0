"""Realtime video sessions: an uploaded video asked about twice (the second prompt reuses its prefix),
camera frames with capture times as one clip, bad media parts as error events, resume by session id."""

from __future__ import annotations

import base64
import io
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest

from omni_agent.realtime.testing import FakeResponder, LiveServer, RealtimeClient, make_app
from omni_agent.settings import Settings
from tests.video_fixtures import draw_frame, make_video

TINY = {"engine": {"kv_cache_mb": 32, "default_max_tokens": 3}}


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return make_video(seconds=2.0, fps=10, width=112, height=84, audio="tone")


def _engine_app(settings: Settings, engine, responder=None):  # noqa: ANN001, ANN202
    """The realtime route and the files API around a tiny engine started with the server."""
    from fastapi import FastAPI

    from omni_agent.realtime.routes import realtime_router
    from omni_agent.server.files import files_router

    @asynccontextmanager
    async def lifespan(_app):  # noqa: ANN001, ANN202
        await engine.start()
        try:
            yield
        finally:
            if responder is not None:
                await responder.aclose()
            await engine.shutdown()

    app = FastAPI(lifespan=lifespan)
    app.include_router(files_router(settings))
    app.include_router(realtime_router(settings, engine=engine, responder=responder))
    return app


def _jpeg_url(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _user(*parts: dict, iid: str | None = None) -> dict:
    item = {"type": "message", "role": "user", "content": list(parts)}
    return {**item, "id": iid} if iid else item


async def _ask(c: RealtimeClient, question: str, n: int) -> dict:
    await c.send({"type": "conversation.item.create", "item": _user({"type": "input_text", "text": question})})
    await c.send({"type": "response.create"})
    return await c.wait_for("response.done", timeout=240, count=n)


async def test_uploaded_video_then_two_questions_reuse_its_prefix(clip_bytes: bytes) -> None:
    from omni_agent.engine import AsyncEngine

    settings = Settings.model_validate(TINY)
    engine = AsyncEngine.from_settings(settings)
    with LiveServer(_engine_app(settings, engine), lifespan="on") as srv:
        async with httpx.AsyncClient(base_url=srv.http) as http:
            up = (await http.post("/v1/files", files={"file": ("clip.mp4", clip_bytes, "video/mp4")},
                                  data={"purpose": "vision"})).json()
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                            "max_output_tokens": 3}})
        await c.wait_for("session.updated")
        await c.send({"type": "conversation.item.create", "event_id": "ev_video", "item": _user(
            {"type": "input_video", "file_id": up["id"], "fps": 2, "include_audio": True}, iid="vid")})
        added = await c.wait_for("conversation.item.added")
        part = added["item"]["content"][0]
        assert part["type"] == "input_video" and part["file_id"] == up["id"]
        video_tokens = part["video"]["tokens"]
        assert part["video"]["frames"] == 4 and part["video"]["has_audio"] and video_tokens > 0
        first = await _ask(c, "what moves in the video?", 1)
        second = await _ask(c, "what colour is the square?", 2)
        assert first["response"]["status"] in ("completed", "incomplete")
        u1, u2 = first["response"]["usage"], second["response"]["usage"]
        assert u1["input_tokens"] > video_tokens  # the video reached the prompt
        # the second question reuses the prefill of everything before it: the video and its audio
        assert u2["input_token_details"]["cached_tokens"] >= video_tokens
        assert not c.of("error")
        await c.close()


@pytest.mark.parametrize("count", [5, 3])
async def test_camera_frames_with_timestamps(count: int) -> None:
    responder = FakeResponder(steps=1)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "conversation.item.create", "item": _user({"type": "input_text", "text": "look"})})
        for i in range(count):  # one frame per item, 500 ms apart, as a phone camera streams them
            await c.send({"type": "conversation.item.create", "item": _user(
                {"type": "input_image", "image_url": _jpeg_url(draw_frame(i, 8, 96, 64)),
                 "timestamp_ms": 10_000 + 500 * i})})
        await c.send({"type": "conversation.item.create", "item": _user(
            {"type": "input_text", "text": "what do you see?"})})
        await c.wait_for("conversation.item.added", count=count + 2)
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await c.wait_for("response.done")
        assert not c.of("error")
        added = c.of("conversation.item.added")[1]["item"]["content"][0]
        assert added == {"type": "input_image", "detail": "auto", "timestamp_ms": 10_000}  # no image bytes echoed
        conv, _ = responder.calls[0]
        parts = [p for m in conv.messages if isinstance(m["content"], list) for p in m["content"]]
        if count >= 4:
            assert [p["type"] for p in parts] == ["video"]
            clip = parts[0]["video"]
            assert clip.timestamps[: count] == pytest.approx([0.5 * i for i in range(count)])
            assert clip.extra["start_s"] == pytest.approx(10.0)
            # the clip stands where the first frame was: before the question
            users = [m for m in conv.messages if m["role"] == "user"]
            kinds = [m["content"] if isinstance(m["content"], str) else "clip" for m in users]
            assert kinds == ["look", "clip", "what do you see?"]
            assert users[1]["item_id"] == conv.items[1]["id"]  # the first frame's item carries the clip
        else:
            assert [p["type"] for p in parts] == ["image"] * count
        await c.close()


async def test_bad_media_parts_are_error_events_and_the_session_lives_on(clip_bytes: bytes) -> None:
    from omni_agent.server.files import default_store

    text_file = default_store().add(b"not a video at all", "notes.txt", "user_data", "text/plain")
    url = "data:video/mp4;base64," + base64.b64encode(clip_bytes[: len(clip_bytes) // 3]).decode()
    bad = {
        "bad_image": ({"type": "input_image", "image_url": "data:image/jpeg;base64,!!!"}, "invalid_image",
                      "item.content.0.image_url"),
        "not_an_image": ({"type": "input_image", "image_url": "https://example.com/cat.jpg"}, "invalid_image",
                         "item.content.0.image_url"),
        "no_image": ({"type": "input_image"}, "invalid_value", "item.content.0.image_url"),
        "unknown_file": ({"type": "input_video", "file_id": "file-doesnotexist"}, "file_not_found",
                         "item.content.0.file_id"),
        "not_a_video": ({"type": "input_video", "file_id": text_file.id}, "invalid_video", "item.content.0.file_id"),
        "cut_video": ({"type": "input_video", "video_url": url}, "invalid_video", "item.content.0.video_url"),
        "no_ref": ({"type": "input_video"}, "invalid_value", "item.content.0.video_url"),
        "bad_fps": ({"type": "input_video", "file_id": text_file.id, "fps": 0}, "invalid_value", None),
    }
    responder = FakeResponder(steps=1)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        for eid, (part, _, _) in bad.items():
            await c.send({"type": "conversation.item.create", "event_id": eid, "item": _user(part)})
        await c.send({"type": "conversation.item.create", "event_id": "assistant_image", "item": {
            "type": "message", "role": "assistant", "content": [
                {"type": "input_image", "image_url": _jpeg_url(draw_frame(0, 4, 32, 32))}]}})
        errors = [await c.wait_for("error", count=n + 1) for n in range(len(bad) + 1)]
        got = {e["error"]["event_id"]: e["error"] for e in errors}
        for eid, (_, code, param) in bad.items():
            assert got[eid]["code"] == code, (eid, got[eid])
            if param is not None:
                assert got[eid]["param"] == param, (eid, got[eid])
        assert got["assistant_image"]["code"] == "invalid_value"
        assert not c.of("conversation.item.added")  # nothing half-added
        # the session lives on
        await c.send({"type": "conversation.item.create", "item": _user(
            {"type": "input_image", "image_url": _jpeg_url(draw_frame(1, 4, 64, 48))},
            {"type": "input_text", "text": "and this?"})})
        await c.send({"type": "response.create"})
        done = await c.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        msg = responder.calls[0][0].messages[-1]
        assert [p["type"] for p in msg["content"]] == ["image", "text"]
        assert msg["content"][0]["image"].size == (64, 48)
        await c.close()


async def test_session_id_from_query_or_session_update() -> None:
    responder = FakeResponder(steps=1)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url + "?session_id=abc")
        await c.wait_for("session.created")
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await c.wait_for("response.done")
        await c.send({"type": "session.update", "session": {"omni": {"session_id": "user-7:chat"}}})
        await c.wait_for("session.updated")
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await c.wait_for("response.done", count=2)
        await c.send({"type": "session.update", "event_id": "bad", "session": {"omni": {"session_id": "a b"}}})
        err = await c.wait_for("error")
        assert err["error"]["event_id"] == "bad" and err["error"]["param"] == "session.omni.session_id"
        await c.close()
        c2 = await RealtimeClient.connect(srv.url)
        created = await c2.wait_for("session.created")
        await c2.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await c2.wait_for("response.done")
        await c2.close()
        with pytest.raises(Exception):  # noqa: B017, PT011 - refused before accept (HTTP 400)
            await RealtimeClient.connect(srv.url + "?session_id=" + "x" * 200)
    # a client's id is scoped to its principal as on the HTTP routes (no keys: the one principal "local")
    assert [o.session_id for _, o in responder.calls] == ["local/abc", "local/user-7:chat", created["session"]["id"]]


async def test_reconnect_with_the_same_session_id_resumes_the_history(tmp_path) -> None:  # noqa: ANN001
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.engine import AsyncEngine

    settings = Settings.model_validate({**TINY, "agent": {"checkpoint_db": str(tmp_path / "sessions.sqlite")}})

    async def one_turn(session_id: str, text: str) -> None:
        engine = AsyncEngine.from_settings(settings)  # a new server instance each time, same SQLite file
        responder = AgentResponder.build(settings, engine, image_tools=False)
        with LiveServer(_engine_app(settings, engine, responder), lifespan="on") as srv:
            c = await RealtimeClient.connect(f"{srv.url}?session_id={session_id}")
            await c.wait_for("session.created")
            await c.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                                "max_output_tokens": 3}})
            done = await _ask(c, text, 1)
            assert done["response"]["status"] in ("completed", "incomplete"), done
            await c.close()

    await one_turn("abc", "my name is Ada")
    await one_turn("abc", "what is my name?")
    await one_turn("other", "hello")
    engine = AsyncEngine.from_settings(settings)
    reader = await AgentResponder.from_settings(settings, engine, image_tools=False)
    try:
        values, _ = await reader.runner.snapshot("local/abc")  # scoped to the principal, as over HTTP
        other, _ = await reader.runner.snapshot("local/other")
    finally:
        await reader.aclose()
    users = [m.content for m in values["messages"] if m.type == "human"]
    assert users == ["my name is Ada", "what is my name?"]
    assert any(m.type == "ai" for m in values["messages"])  # the first answer is in the history too
    assert [m.content for m in other["messages"] if m.type == "human"] == ["hello"]


def test_agent_keeps_video_parts_by_reference(tmp_path, clip_bytes: bytes) -> None:  # noqa: ANN001
    from omni_agent.agent.artifacts import ArtifactStore
    from omni_agent.agent.media import user_parts, video_prompt_part
    from vision.video import load_video, video_parts

    store = ArtifactStore(tmp_path / "art")
    clip = load_video(clip_bytes)
    content = [*video_parts(clip), {"type": "text", "text": "what moves?"}]
    content[1]["source"] = "video"
    parts = user_parts(store, content, "what moves?")
    assert [p["type"] for p in parts] == ["video", "audio", "text"]  # video first, the question last
    assert parts[0] == {"type": "video", "video_id": clip.content_hash}  # small enough for the checkpoint
    assert parts[2]["text"] == "what moves?"  # the video's own audio is not the user's voice
    assert video_prompt_part(parts[0])["video"] is clip
    assert video_prompt_part({"type": "video", "video_id": "gone"}) is None
    voice = user_parts(store, [{"type": "audio", "audio": np.zeros(1600, np.float32)}], "spoken words")
    assert [p["type"] for p in voice] == ["audio"]  # a spoken question keeps its transcript as a note only
