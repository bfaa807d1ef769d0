"""Sane reply lengths on random weights: a default output budget and speech cap, a small
``max_output_tokens`` that still answers, and usage that counts what the reply cost.

"Say hi" used to report ~30,600 input tokens: the random thinker called ``generate_image`` in every
one of the 8 tool rounds (each round a decision and an argument request re-reading the ~1,800-token
prompt with the tool specs and the growing history: 17 engine requests), then spoke ~600 s of babble.
"""

from __future__ import annotations

import asyncio

import pytest

from omni_agent.realtime.responder import (
    AudioDelta,
    Conversation,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    ToolProgress,
)
from omni_agent.settings import Settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from audio.tts import StreamingTTS
    from omni_agent.engine import AsyncEngine

    settings = Settings.model_validate({
        "engine": {"kv_cache_mb": 32},
        "agent": {"checkpoint_db": str(tmp_path_factory.mktemp("db") / "s.sqlite"),
                  "max_reply_tokens": 48, "max_reply_audio_s": 2.0}})
    return settings, AsyncEngine.from_settings(settings), StreamingTTS.build(settings)


async def say_hi(stack, **options):
    from omni_agent.agent.responder import AgentResponder

    settings, engine, tts = stack
    responder = AgentResponder.build(settings, engine, tts)
    frames = [ev async for ev in responder.respond(Conversation(messages=[{"role": "user", "content": "Say hi"}]),
                                                   ResponseOptions(**options), asyncio.Event())]
    await responder.aclose()
    await engine.shutdown()
    return frames


def test_default_reply_is_capped(stack):
    frames = asyncio.run(say_hi(stack, modalities=("audio",)))
    fin = frames[-1]
    assert isinstance(fin, ResponseFinished)
    calls = [f for f in frames if isinstance(f, ToolProgress) and f.message.startswith("calling ")]
    assert len(calls) <= 1  # a repeated identical call is answered, not run again until max_steps
    assert 0 < fin.usage.output_tokens <= 48  # agent.max_reply_tokens covers the whole reply
    assert fin.usage.input_tokens < 8000
    seconds = sum(len(f.pcm) / f.sample_rate for f in frames if isinstance(f, AudioDelta))
    assert 0 < seconds <= 2.0  # agent.max_reply_audio_s


def test_small_max_output_tokens_still_answers(stack):
    frames = asyncio.run(say_hi(stack, modalities=("text",), max_output_tokens=16))
    fin = frames[-1]
    text = "".join(f.text for f in frames if isinstance(f, TextDelta))
    assert text  # no tool round ate the budget
    assert fin.usage.output_tokens == 16 and fin.status == "incomplete"  # usage counts what was produced
    assert not any(isinstance(f, ToolProgress) for f in frames)
