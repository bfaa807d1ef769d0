"""vision.video: decoding, sampling times, audio track, errors and the token budget on drawn videos."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from tests.video_fixtures import encoder_available, index_from_frame, make_audio_only, make_video, tone
from vision.video import (
    CameraFrameBuffer,
    VideoCache,
    VideoError,
    clip_from_frames,
    load_video,
    plan_sampling,
    tokens_for,
)

FORMATS = [
    pytest.param("mp4", None, id="mp4-h264"),
    pytest.param("webm", None, id="webm-vp9"),
    pytest.param("webm", "libvpx", id="webm-vp8"),
    pytest.param("mkv", None, id="mkv-h264"),
]


@pytest.fixture(scope="module")
def mp4_3s() -> bytes:
    return make_video(seconds=3.0, fps=10, container="mp4")


@pytest.mark.parametrize(("container", "codec"), FORMATS)
def test_sampled_frames_are_at_2fps_and_show_the_right_source_frame(container: str, codec: str | None) -> None:
    # PyAV's wheels ship these encoders; a build without them cannot make the test videos
    assert encoder_available(codec or {"mp4": "libx264", "mkv": "libx264", "webm": "libvpx-vp9"}[container])
    data = make_video(seconds=3.0, fps=10, container=container, video_codec=codec, audio=None)
    clip = load_video(data)
    assert clip.timestamps == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert [index_from_frame(f, 30) for f in clip.frames] == [0, 5, 10, 15, 20, 25]
    assert clip.fps == 2.0 and clip.duration == pytest.approx(3.0, abs=0.05)
    h, w = clip.frames[0].shape[:2]
    assert h % 28 == 0 and w % 28 == 0 and 78400 <= h * w <= 802816  # the image rules
    assert abs(w / h - 96 / 64) < 0.15  # aspect kept
    assert clip.frames_decoded == 30


def test_max_frames_spreads_samples_over_the_whole_video() -> None:
    data = make_video(seconds=8.0, fps=10, audio=None)
    clip = load_video(data, max_frames=8)
    assert clip.timestamps == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert [index_from_frame(f, 80) for f in clip.frames] == [0, 10, 20, 30, 0, 10, 20, 30]  # codes cycle at 40
    assert clip.fps == pytest.approx(1.0)
    assert "max 8 frames" in (clip.budget_note or "")


def test_short_video_gets_min_frames_and_frame_on_screen_is_taken() -> None:
    data = make_video(seconds=1.0, fps=10, audio=None)
    clip = load_video(data)  # 2 frames at 2 fps < min 4 -> 4 frames spread over 1 s
    assert clip.timestamps == pytest.approx([0.0, 0.2, 0.5, 0.7])  # frames shown at 0, .25, .5, .75
    assert [index_from_frame(f, 10) for f in clip.frames] == [0, 2, 5, 7]
    assert len(clip.frames) % 2 == 0


def test_groups_and_second_per_grid_follow_timestamps(mp4_3s: bytes) -> None:
    clip = load_video(mp4_3s)
    assert clip.num_groups == 3
    assert clip.group_timestamps == pytest.approx([0.0, 1.0, 2.0])
    assert clip.second_per_grid == pytest.approx(1.0)  # 2 frames per group at 2 fps
    clip4 = load_video(mp4_3s, fps=4.0)
    assert clip4.second_per_grid == pytest.approx(0.5)


def test_bytes_file_object_and_path_decode_identically(mp4_3s: bytes, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_3s)
    a, b, c = load_video(mp4_3s), load_video(io.BytesIO(mp4_3s)), load_video(str(path))
    assert a.content_hash == b.content_hash == c.content_hash
    for x, y in zip(a.frames, c.frames, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.audio, b.audio)
    assert load_video(mp4_3s, fps=1.0).content_hash != a.content_hash  # options are part of the hash


def test_audio_track_is_extracted_at_16k() -> None:
    data = make_video(seconds=2.0, fps=10, audio="tone")
    clip = load_video(data)
    assert clip.audio is not None and clip.audio.dtype == np.float32
    assert abs(len(clip.audio) - 32000) < 1600  # 2 s at 16 kHz (codec padding aside)
    spec = np.abs(np.fft.rfft(clip.audio[2000:30000]))
    peak_hz = np.argmax(spec) * 16000 / len(clip.audio[2000:30000])
    assert abs(peak_hz - 440) < 5
    assert load_video(data, audio=False).audio is None
    assert load_video(make_video(seconds=1.0, audio=None)).audio is None


def test_speech_track_webm() -> None:
    data = make_video(seconds=2.0, fps=5, container="webm", audio="speech:the door opens")
    clip = load_video(data)
    assert clip.audio is not None
    rms = float(np.sqrt(np.mean(clip.audio**2)))
    assert rms > 0.01  # espeak-ng's voice is there


def test_errors_are_clear(mp4_3s: bytes, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(VideoError, match="empty"):
        load_video(b"")
    with pytest.raises(VideoError, match="corrupt, truncated or not a video"):
        load_video(b"this is not a video" * 50)
    with pytest.raises(VideoError, match="truncated"):
        load_video(mp4_3s[: len(mp4_3s) // 2])  # mp4 index at the end is gone
    webm = make_video(seconds=4.0, fps=10, container="webm")
    with pytest.raises(VideoError, match="truncated"):
        load_video(webm[: len(webm) // 2])  # frames stop early
    with pytest.raises(VideoError, match="audio only"):
        load_video(make_audio_only())
    with pytest.raises(VideoError, match="does not exist"):
        load_video(str(tmp_path / "missing.mp4"))
    bad = bytearray(mp4_3s)
    bad[len(bad) // 3 : len(bad) // 3 + 3000] = bytes(3000)
    with pytest.raises(VideoError, match="corrupt|truncated"):
        load_video(bytes(bad))


def test_ten_minute_video_respects_the_token_budget() -> None:
    data = make_video(seconds=600.0, fps=1, width=64, height=48, audio=None, gop=30)
    clip = load_video(data, max_tokens=3000)
    assert clip.duration == pytest.approx(600.0, abs=1.0)
    assert clip.num_tokens <= 3000
    assert len(clip.frames) >= 4 and len(clip.frames) % 2 == 0
    assert clip.timestamps[-1] > 500  # still spans the whole video
    assert clip.budget_note and "max 128 frames" in clip.budget_note and "3000" in clip.budget_note
    steps = np.diff(clip.timestamps)
    assert np.allclose(steps, steps[0], atol=1.0)  # evenly spread
    # the same video without a budget uses the max_frames cap only
    free = load_video(data)
    assert len(free.frames) == 128 and free.num_tokens > 3000


def test_budget_lowers_resolution_before_frames() -> None:
    plan = plan_sampling(60.0, 1280, 720)  # Ming's own size for 120 frames: its cap falls with the frame count
    assert len(plan.times) == 120 and (plan.height, plan.width) == (252, 448) and plan.note is None
    plan = plan_sampling(60.0, 1280, 720, max_tokens=7000, budget_min_pixels=50176)
    assert len(plan.times) == 120 and plan.height * plan.width < 252 * 448
    assert tokens_for(len(plan.times), plan.height, plan.width) <= 7000
    assert "resolution lowered from Ming's 448x252" in plan.note and "frames reduced" not in plan.note
    plan = plan_sampling(60.0, 1280, 720, max_tokens=2000, budget_min_pixels=50176)
    assert plan.height * plan.width >= 50176  # resolution floor reached, then fewer frames
    assert "frames reduced" in plan.note
    assert tokens_for(len(plan.times), plan.height, plan.width) <= 2000
    with pytest.raises(VideoError, match="too small"):
        plan_sampling(60.0, 1280, 720, max_tokens=50)
    assert plan_sampling(3.0, 96, 64).note is None


def test_frame_sizes_follow_ming_video_limits() -> None:
    """Issue 16: 112x112 frames get Ming's video floor (100,352 px), not the image floor."""
    plan = plan_sampling(2.0, 112, 112)
    assert (plan.height, plan.width) == (336, 336) and len(plan.times) == 4
    assert tokens_for(len(plan.times), plan.height, plan.width) == 288  # grid (2, 24, 24)
    plan = plan_sampling(3.0, 320, 240)
    assert (plan.height, plan.width) == (280, 392)  # 140 tokens per frame pair


def test_decoded_clip_cache(mp4_3s: bytes) -> None:
    cache = VideoCache(max_items=2)
    a, hit_a = cache.load(mp4_3s)
    b, hit_b = cache.load(mp4_3s)
    assert not hit_a and hit_b and a is b
    c, hit_c = cache.load(mp4_3s, fps=1.0)
    assert not hit_c and c is not a


def test_camera_frames_become_a_clip() -> None:
    buf = CameraFrameBuffer(window_s=4.0, fps=2.0)
    rng = np.random.default_rng(0)
    for i in range(20):  # 10 s of camera at 2 fps
        buf.push(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), 100.0 + i * 0.5)
    clip = buf.clip()
    assert len(clip.frames) % 2 == 0
    assert clip.timestamps[0] == 0.0 and clip.extra["start_s"] >= 105.5  # only the last ~4 s
    assert clip.timestamps[-1] == pytest.approx(4.0, abs=0.5)
    h, w = clip.frames[0].shape[:2]
    assert h % 28 == 0 and w % 28 == 0
    odd = clip_from_frames([np.zeros((56, 56, 3), np.uint8)] * 3, [0.0, 0.5, 1.0])
    assert len(odd.frames) == 4 and odd.timestamps[-1] == 1.0
    with pytest.raises(VideoError, match="backwards"):
        clip_from_frames([np.zeros((56, 56, 3), np.uint8)] * 2, [1.0, 0.5])
    assert math.isclose(odd.second_per_grid, 1.0)


@pytest.mark.parametrize(("container", "audio"), [("mp4", True), ("webm", False)])
def test_sparse_sampling_seeks_and_matches_decoding_everything(container: str, audio: bool) -> None:
    track = tone(20.0, 8000) if audio else None  # a short track keeps the fixture cheap
    data = make_video(seconds=400.0, fps=2, width=64, height=48, container=container, audio=track,
                      audio_rate=8000, gop=10)
    full = load_video(data, max_frames=10, seek=False)
    fast = load_video(data, max_frames=10)  # samples 40 s apart: seeks
    assert full.frames_decoded == 800 and fast.frames_decoded < 200
    assert fast.timestamps == full.timestamps
    assert all(np.array_equal(a, b) for a, b in zip(fast.frames, full.frames, strict=True))
    assert (fast.audio is not None) == audio
    if audio:
        assert np.array_equal(fast.audio, full.audio) and fast.audio.size == pytest.approx(20 * 16000, rel=0.01)
    with pytest.raises(VideoError, match="truncated"):
        load_video(data[: len(data) // 2], max_frames=10)
