"""``omni-agent bench videoqa``: how much cheaper later questions about one video are than the first.

One session on a drawn test video (moving shapes, spoken audio track): the first question decodes the
video, encodes its frames and audio and prefills the whole prompt; later questions reuse the decoded
clip, the encoder output and the video's KV prefix, so they only prefill the question.

Keys (a contract): ``first_question_ms`` and ``later_question_ms_p50`` are times from asking to the
first answer token; ``later_question_speedup`` is their ratio in the same run; ``decode_fps`` is
frames decoded per second while loading the clip. The model is warmed up first (a text prompt and a
different short clip), so the first question pays for its video, not for one-time start-up costs.
Options (``--opt``): ``seconds``, ``questions``, ``max_tokens``, ``width``, ``height``.
"""

from __future__ import annotations

import statistics
from typing import Any

from omni_agent.bench import BenchContext, benchmark

QUESTIONS = [
    "What happens after the door opens?",
    "What colour is the moving square?",
    "Which way does the square move?",
    "What is said in the video?",
    "How many shapes are there?",
    "Describe the last frame.",
    "Is the background dark or light?",
    "When does the square reach the right edge?",
    "Summarise the video in one sentence.",
]


@benchmark("videoqa", help="video QA session: first vs later question latency, decode speed")
def videoqa(ctx: BenchContext) -> dict[str, Any]:
    import asyncio
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/video_fixtures.py draws the video
    from tests.video_fixtures import make_video

    opts = ctx.options
    seconds = float(opts.get("seconds", 4.0 if ctx.quick else 20.0))
    n_questions = int(opts.get("questions", 3 if ctx.quick else 8))
    max_tokens = int(opts.get("max_tokens", 4 if ctx.quick else 16))
    width, height = int(opts.get("width", 320)), int(opts.get("height", 240))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.mp4"
        make_video(seconds=seconds, fps=25, width=width, height=height, path=path,
                   audio="speech:the door opens and a red square slides to the right")
        warm = make_video(seconds=1.0, fps=10, width=width, height=height, audio="tone")
        return asyncio.run(_session(ctx, path.read_bytes(), warm, n_questions, max_tokens))


async def _session(ctx: BenchContext, video: bytes, warm: bytes, n_questions: int,
                   max_tokens: int) -> dict[str, Any]:
    import asyncio

    from omni_agent.commands.video import ask, session_options, token_budget
    from omni_agent.engine import AsyncEngine
    from vision.video import VideoCache

    engine = await asyncio.to_thread(AsyncEngine.from_settings, ctx.settings)  # builds the model
    await engine.start()
    try:
        load, media = session_options(token_budget(engine))
        kw = {"max_tokens": max_tokens, "load_options": load, "temperature": 0.0, "media_tokens": media}
        # Warm-up: kernels, thread pools and allocator on a different clip (its own cache entries).
        await ask(engine, warm, "warm up", cache=VideoCache(), **kw)
        cache = VideoCache()  # fresh: the first question must decode
        answers = [await ask(engine, video, QUESTIONS[i % len(QUESTIONS)], cache=cache, **kw)
                   for i in range(max(2, n_questions))]
        clip, _ = cache.load(video, **load)
    finally:
        await engine.shutdown()
    first, later = answers[0], answers[1:]
    later_p50 = statistics.median(a.first_token_s for a in later)
    return {
        "first_question_ms": round(first.first_token_s * 1000, 2),
        "later_question_ms_p50": round(later_p50 * 1000, 2),
        "later_question_speedup": round(first.first_token_s / later_p50, 2) if later_p50 > 0 else 0.0,
        "decode_fps": round(clip.frames_decoded / clip.decode_s, 1) if clip.decode_s > 0 else 0.0,
        "first_question_total_ms": round(first.total_s * 1000, 2),
        "later_question_total_ms_p50": round(statistics.median(a.total_s for a in later) * 1000, 2),
        "decode_ms": round(first.decode_s * 1000, 2),
        "video_seconds": round(clip.duration, 2),
        "frames_sampled": len(clip.frames),
        "video_tokens": clip.num_tokens,
        "prompt_tokens": first.prompt_tokens,
        "later_cached_tokens_min": min(a.cached_tokens for a in later),
        "questions": len(answers),
        "answer_tokens": max_tokens,
        "preset": ctx.settings.model.path or ctx.settings.model.preset,
        "device": ctx.settings.model.device,
    }
