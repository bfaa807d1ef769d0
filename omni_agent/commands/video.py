"""``omni-agent video ask CLIP QUESTION [-q QUESTION ...]``: a video QA session from the terminal.

The clip is decoded once (2 fps, 4..128 frames, the image resize rules, its audio track at 16 kHz),
then every question is asked against the same prompt prefix (video, then audio, then the question),
so later questions reuse the decoded clip, the encoder output and the video's KV prefix. Each answer
streams as it is generated, followed by its timings.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from omni_agent.settings import Settings
from vision.video import PROMPT_RESERVE_TOKENS, media_token_budget


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("video", help="ask questions about a video (video ask CLIP QUESTION)",
                              description="Video QA sessions: decode a clip once, ask many questions.")
    sub = p.add_subparsers(dest="video_command", metavar="SUBCOMMAND")
    ask = sub.add_parser("ask", parents=[common], help="ask one or more questions about a video file",
                         description="Decode CLIP once and answer each question, streaming the answers. "
                                     "Without --model-path the model has random tiny weights: the answers "
                                     "are noise, the timings are real.")
    ask.add_argument("clip", help="video file (mp4, webm, mkv; h264, vp8, vp9)")
    ask.add_argument("question", nargs="?", help="the first question")
    ask.add_argument("-q", "--question", dest="more", action="append", default=[], metavar="TEXT",
                     help="another question (repeatable)")
    ask.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2)")
    ask.add_argument("--min-frames", type=int, default=4, help="fewest frames sampled (default 4)")
    ask.add_argument("--max-frames", type=int, default=128, help="most frames sampled (default 128)")
    ask.add_argument("--max-video-tokens", type=int, default=None,
                     help="vision-token budget for the frames (default: 3/4 of the context length minus "
                          f"{PROMPT_RESERVE_TOKENS}; the audio gets the rest)")
    ask.add_argument("--no-audio", action="store_true", help="leave the video's audio track out of the prompt")
    ask.add_argument("--max-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    ask.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    ask.set_defaults(func=run_ask)
    p.set_defaults(func=lambda args, settings: (p.print_help(), 2)[1])


def token_budget(engine: Any, reserve: int = PROMPT_RESERVE_TOKENS) -> int:
    """Media tokens (video plus audio) a clip may use in this engine's context."""
    return media_token_budget(engine.max_model_len, reserve)


def session_options(budget: int, **load: Any) -> tuple[dict[str, Any], int]:
    """``load_video`` options with the frames' share of ``budget``, and the media budget for ``ask``."""
    from vision.video import VIDEO_BUDGET_SHARE

    return {**load, "max_tokens": int(budget * VIDEO_BUDGET_SHARE)}, budget


@dataclass
class Answer:
    """One answered question and where its time went."""

    question: str
    text: str
    decode_s: float
    """Decoding the video (0 when the decoded clip came from the cache)."""
    prepare_s: float
    """Building the prompt (frame patches, log-mel)."""
    first_token_s: float
    """From asking to the first generated token (includes decode and prompt building)."""
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    clip_cached: bool


async def ask(engine: Any, source: Any, question: str, *, load_options: dict[str, Any] | None = None,
              with_audio: bool = True, max_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
              on_text: Callable[[str], None] | None = None, cache: Any = None,
              media_tokens: int | None = None) -> Answer:
    """Ask one question about a video through ``engine``, decoding through the clip cache.

    Args:
        engine: a started ``AsyncEngine``.
        source: video path or bytes.
        question: the question text.
        load_options: ``load_video`` options (fps, max_frames, max_tokens, ...).
        with_audio: put the audio track in the prompt.
        max_tokens: answer length limit.
        temperature: 0 for greedy.
        seed: sampling seed.
        on_text: called with each streamed text delta.
        cache: a ``VideoCache`` (default: the process-wide one).
        media_tokens: budget for video plus audio tokens (the audio is cut to what the video leaves).

    Raises:
        vision.video.VideoError: the video cannot be used.
        omni_agent.engine.EngineError: the prompt cannot be served (too long, cache full).
    """
    import asyncio

    from omni_agent.engine import GenerationRequest, SamplingParams
    from vision.video import default_cache, video_question_messages

    cache = cache or default_cache()
    t0 = time.perf_counter()
    # Decoding and patching are CPU work: worker threads keep the event loop (and the engine) going.
    clip, cached = await asyncio.to_thread(cache.load, source, **(load_options or {}))
    t_decoded = time.perf_counter()
    messages = video_question_messages(clip, question, with_audio=with_audio, max_tokens=media_tokens)
    prompt = await asyncio.to_thread(engine.processor, messages)
    t_prepared = time.perf_counter()
    request = GenerationRequest(request_id=f"video-{uuid.uuid4().hex[:12]}", prompt=prompt,
                                sampling=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed))
    text: list[str] = []
    first: float | None = None
    last = None
    async for out in engine.generate(request):
        if first is None and (out.token_ids or out.finished):
            first = time.perf_counter()
        if out.text:
            text.append(out.text)
            if on_text is not None:
                on_text(out.text)
        last = out
    t_end = time.perf_counter()
    return Answer(question=question, text="".join(text), decode_s=0.0 if cached else t_decoded - t0,
                  prepare_s=t_prepared - t_decoded, first_token_s=(first or t_end) - t0, total_s=t_end - t0,
                  prompt_tokens=last.prompt_tokens if last else 0, cached_tokens=last.cached_tokens if last else 0,
                  completion_tokens=last.completion_tokens if last else 0, clip_cached=cached)


async def ask_many(engine: Any, source: Any, questions: list[str], **kwargs: Any) -> AsyncIterator[Answer]:
    """``ask`` each question in turn (one session: later ones hit every cache)."""
    for q in questions:
        yield await ask(engine, source, q, **kwargs)


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from vision.video import VideoError

    questions = [q for q in [args.question, *args.more] if q]
    if not questions:
        print("omni-agent: error: give a question (positional or -q)", file=sys.stderr)
        return 2
    from omni_agent.preflight import building, check_input_file, check_model, random_weights_notice

    check_input_file(args.clip, "video")
    check_model(settings, "thinker")
    try:
        with open(args.clip, "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"omni-agent: error: cannot read {args.clip}: {e.strerror}", file=sys.stderr)
        return 2

    async def session() -> int:
        from omni_agent.engine import AsyncEngine, EngineError

        random_weights_notice(settings, "video")  # the answers are noise; the timings are real
        with building("the thinker"):
            engine = await asyncio.to_thread(AsyncEngine.from_settings, settings)  # builds the model: seconds
        await engine.start()
        if args.max_video_tokens:
            opts, media = {"max_tokens": args.max_video_tokens}, None
        else:
            opts, media = session_options(token_budget(engine))
        opts.update(fps=args.fps, min_frames=args.min_frames, max_frames=args.max_frames)
        try:
            for i, q in enumerate(questions):
                print(f"Q{i + 1}: {q}\nA{i + 1}: ", end="", flush=True)
                ans = await ask(engine, data, q, load_options=opts, with_audio=not args.no_audio,
                                max_tokens=args.max_tokens, temperature=args.temperature, seed=settings.model.seed,
                                media_tokens=media,
                                on_text=lambda t: print(t, end="", flush=True))
                if i == 0:
                    from vision.video import default_cache

                    clip, _ = default_cache().load(data, **opts)
                    w, h = clip.size
                    print(f"\n  [video: {clip.duration:.1f} s, {len(clip.frames)} frames at {clip.fps:.3g} fps, "
                          f"{w}x{h}, {clip.num_tokens} tokens, audio {'yes' if clip.audio is not None else 'no'}]",
                          end="")
                    if clip.budget_note:
                        print(f"\n  [budget: {clip.budget_note}]", end="")
                print(f"\n  [decode {ans.decode_s * 1000:.0f} ms{' (cached)' if ans.clip_cached else ''}, "
                      f"first token {ans.first_token_s * 1000:.0f} ms, total {ans.total_s * 1000:.0f} ms, "
                      f"prompt {ans.prompt_tokens} tokens ({ans.cached_tokens} cached), "
                      f"{ans.completion_tokens} generated]", flush=True)
        except VideoError as e:
            print(f"\nomni-agent: error: {args.clip}: {e}", file=sys.stderr)
            return 1
        except EngineError as e:
            print(f"\nomni-agent: error: {e}", file=sys.stderr)
            return 1
        finally:
            await engine.shutdown()
        return 0

    return asyncio.run(session())
