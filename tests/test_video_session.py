"""Video QA sessions: MRoPE time ids from timestamps, cached questions, /v1/files upload, CLI, bench."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from omni_agent.model.processor import OmniProcessor
from tests.video_fixtures import make_video
from vision.video import VideoCache, load_video, video_question_messages


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return make_video(seconds=4.0, fps=10, width=160, height=120, audio="speech:the door opens")


def _video_t_ids(prompt, item_index: int = 0) -> torch.Tensor:  # noqa: ANN001
    item = [it for it in prompt.mm_items if it.kind == "video"][item_index]
    return prompt.position_ids[0, item.offset : item.offset + item.length], item


@pytest.mark.parametrize(("fps", "max_frames"), [(2.0, 128), (4.0, 128), (5.0, 128), (2.0, 4)])
def test_mrope_time_ids_follow_timestamps(fps: float, max_frames: int) -> None:
    data = make_video(seconds=8.0, fps=10, width=112, height=84, audio=None)
    clip = load_video(data, fps=fps, max_frames=max_frames)
    proc = OmniProcessor.for_preset("tiny", time_aligned_video=True)
    tps = proc.config.vision.tokens_per_second
    prompt = proc(video_question_messages(clip, "what happens?"))
    t_ids, item = _video_t_ids(prompt)
    assert item.second_per_grid == pytest.approx(clip.second_per_grid)
    per_group = item.length // clip.num_groups
    start = int(t_ids[0])
    groups = t_ids.view(clip.num_groups, per_group)
    assert bool((groups == groups[:, :1]).all())  # one time id per frame group
    expected = [start + int(ts * tps + 1e-6) for ts in clip.group_timestamps]  # Qwen/Ming truncate
    assert groups[:, 0].tolist() == expected


def test_default_processor_numbers_groups_like_ming() -> None:
    clip = load_video(make_video(seconds=8.0, fps=10, width=112, height=84, audio=None))
    prompt = OmniProcessor.for_preset("tiny")(video_question_messages(clip, "q"))
    t_ids, _ = _video_t_ids(prompt)
    groups = t_ids.view(clip.num_groups, -1)[:, 0]
    assert (groups - groups[0]).tolist() == list(range(clip.num_groups))  # Ming's own inference: t = group index


def test_audio_track_is_placed_after_the_video(clip_bytes: bytes) -> None:
    clip = load_video(clip_bytes)
    prompt = OmniProcessor.for_preset("tiny")(video_question_messages(clip, "what is said?"))
    kinds = [it.kind for it in prompt.mm_items]
    assert kinds == ["video", "audio"]
    assert prompt.mm_items[1].offset > prompt.mm_items[0].offset
    no_audio = OmniProcessor.for_preset("tiny")(video_question_messages(clip, "q", with_audio=False))
    assert [it.kind for it in no_audio.mm_items] == ["video"]


@pytest.fixture(scope="module")
def engine():
    from omni_agent.engine import AsyncEngine
    from omni_agent.settings import Settings

    return AsyncEngine.from_settings(Settings.model_validate({"engine": {"kv_cache_mb": 32}}))


async def test_later_questions_hit_every_cache(engine, clip_bytes: bytes) -> None:  # noqa: ANN001
    from omni_agent.commands.video import ask

    cache = VideoCache()
    await engine.start()
    try:
        first = await ask(engine, clip_bytes, "what happens after the door opens?", cache=cache, max_tokens=3)
        calls = engine.stats()["encoder_calls"]
        second = await ask(engine, clip_bytes, "what colour is the square?", cache=cache, max_tokens=3)
    finally:
        await engine.shutdown()
    clip, _ = cache.load(clip_bytes)
    assert not first.clip_cached and second.clip_cached and second.decode_s == 0.0
    assert first.cached_tokens < clip.num_tokens <= second.cached_tokens  # the video's prefill is reused
    assert engine.stats()["encoder_calls"] == calls  # and its encoder output
    assert second.first_token_s < first.first_token_s


def test_upload_then_ask_twice_over_http(clip_bytes: bytes) -> None:
    from fastapi.testclient import TestClient

    from omni_agent.engine import AsyncEngine
    from omni_agent.server.app import create_app
    from omni_agent.server.files import FileStore, files_router
    from omni_agent.settings import Settings

    settings = Settings.model_validate({"engine": {"kv_cache_mb": 32, "default_max_tokens": 3}})
    store = FileStore()
    app = create_app(settings, AsyncEngine.from_settings(settings), extra_routers=[files_router(settings, store=store)],
                     file_resolver=lambda fid: store.get(fid).data)
    with TestClient(app) as client:
        r = client.post("/v1/files", files={"file": ("clip.mp4", clip_bytes, "video/mp4")}, data={"purpose": "vision"})
        assert r.status_code == 200, r.text
        up = r.json()
        assert up["id"].startswith("file-") and up["object"] == "file" and up["bytes"] == len(clip_bytes)
        assert up["video"]["frames"] == 8 and up["video"]["has_audio"] and up["video"]["tokens"] > 0

        def chat(question: str, ref: str) -> dict:
            content = [{"type": "video", "video": {"url": ref}}, {"type": "text", "text": question}]
            r = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 3, "temperature": 0,
                                                          "messages": [{"role": "user", "content": content}]})
            assert r.status_code == 200, r.text
            return r.json()

        a = chat("what happens after the door opens?", up["id"])
        b = chat("what colour is the square?", up["id"])
        cached = b["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert a["usage"]["prompt_tokens_details"]["cached_tokens"] < up["video"]["tokens"] <= cached
        data_url = "data:video/mp4;base64," + base64.b64encode(clip_bytes).decode()
        c = chat("and now?", data_url)  # same bytes inline: same content hash, same prefix
        assert c["usage"]["prompt_tokens_details"]["cached_tokens"] >= up["video"]["tokens"]

        assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [up["id"]]
        assert client.get(f"/v1/files/{up['id']}").json()["filename"] == "clip.mp4"
        assert client.get(f"/v1/files/{up['id']}/content").content == clip_bytes
        bad = client.post("/v1/files", files={"file": ("bad.mp4", clip_bytes[: len(clip_bytes) // 2], "video/mp4")})
        assert bad.status_code == 400 and "truncated" in bad.json()["error"]["message"]
        assert client.delete(f"/v1/files/{up['id']}").json()["deleted"] is True
        missing = client.get(f"/v1/files/{up['id']}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"
        r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "video", "video": {"url": up["id"]}}, {"type": "text", "text": "q"}]}]})
        assert r.status_code == 404


def test_realtime_helpers(clip_bytes: bytes) -> None:
    from omni_agent.server.files import FileStore, decode_image_data_url, realtime_video_parts
    from vision.video import VideoError

    store = FileStore()
    f = store.add(clip_bytes, "clip.mp4", "vision")
    parts = realtime_video_parts({"type": "input_video", "file_id": f.id}, store=store)
    assert [p["type"] for p in parts] == ["video", "audio"]
    url = "data:video/mp4;base64," + base64.b64encode(clip_bytes).decode()
    parts2 = realtime_video_parts({"type": "input_video", "video_url": url, "include_audio": False})
    assert [p["type"] for p in parts2] == ["video"]
    assert parts2[0]["video"].content_hash == parts[0]["video"].content_hash
    with pytest.raises(VideoError, match="file_id or a video_url"):
        realtime_video_parts({"type": "input_video"})
    with pytest.raises(VideoError, match="remote URLs"):
        realtime_video_parts({"type": "input_video", "video_url": "https://example.com/a.mp4"})
    with pytest.raises(KeyError):
        realtime_video_parts({"type": "input_video", "file_id": "file-missing"}, store=store)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="JPEG")
    img = decode_image_data_url("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    assert img.size == (64, 48)
    with pytest.raises(VideoError):
        decode_image_data_url("data:image/jpeg;base64,!!!")


def test_cli_video_ask(tmp_path, capsys, monkeypatch, clip_bytes: bytes) -> None:  # noqa: ANN001
    from omni_agent import preflight
    from omni_agent.cli import main

    monkeypatch.setattr(preflight, "_told_random", False)  # said once per process: make this call the first
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_bytes)
    rc = main(["video", "ask", str(path), "what happens after the door opens?", "-q", "and then?",
               "--max-tokens", "2"])
    out = capsys.readouterr()
    assert rc == 0
    assert "Q1: what happens after the door opens?" in out.out and "Q2: and then?" in out.out
    assert out.out.count("first token") == 2 and "(cached)" in out.out and "decode" in out.out
    assert "weights are RANDOM ('tiny' preset" in out.err
    assert main(["video", "ask", str(tmp_path / "nope.mp4"), "q"]) == 2
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 10)
    assert main(["video", "ask", str(tmp_path / "bad.mp4"), "q"]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_bench_videoqa_quick_keys(capsys) -> None:  # noqa: ANN001
    from omni_agent.cli import main

    assert main(["bench", "videoqa", "--quick", "--json", "--opt", "seconds=2", "--opt", "questions=2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("first_question_ms", "later_question_ms_p50", "later_question_speedup", "decode_fps"):
        assert isinstance(result[key], int | float) and result[key] > 0
    assert result["later_cached_tokens_min"] >= result["video_tokens"]


def test_audio_is_cut_to_the_media_budget(clip_bytes: bytes) -> None:
    from vision.video import video_parts

    clip = load_video(clip_bytes)
    full = video_parts(clip)
    assert len(full) == 2 and full[1]["audio"].size == clip.audio.size
    assert clip.audio.size > 16000
    cut = video_parts(clip, max_tokens=clip.num_tokens + 20)  # 20 tokens = 0.8 s of audio at 25 Hz
    assert cut[1]["audio"].size == int(0.8 * 16000)
    assert len(video_parts(clip, max_tokens=clip.num_tokens)) == 1  # no room left: video only
