"""Context truncation: a 200-turn conversation with ``truncation: "auto"`` never fails (the prompt is
measured with the real tokenizer), retention_ratio keeps a stable prefix, "disabled" is a clear error,
media go first; the agent's history follows the same rule."""

import asyncio
import json

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from audio.vad import SileroModelPool
from omni_agent.agent.history import fit_history
from omni_agent.realtime import truncation as trunc
from omni_agent.realtime.responder import ResponseFinished, TextDelta, Usage
from omni_agent.realtime.session import RealtimeSession
from omni_agent.settings import RealtimeSettings

MODEL_LEN = 1024
POOL = SileroModelPool()


@pytest.fixture(scope="module")
def processor():
    from omni_agent.model.processor import OmniProcessor

    return OmniProcessor.for_preset("tiny")


class MeasuringResponder:
    """Builds the real prompt with the tiny processor and fails like the engine when it is too long."""

    def __init__(self, processor):
        self.engine = type("E", (), {"max_model_len": MODEL_LEN, "processor": processor})()
        self.prompts = []

    async def respond(self, conversation, options, cancel):
        n = len(self.engine.processor(conversation.messages, add_generation_prompt=True).input_ids)
        self.prompts.append((n, len(conversation.messages), conversation.messages[1].get("item_id")))
        mot = options.max_output_tokens or trunc.ANSWER_RESERVE
        if n + mot > MODEL_LEN:
            raise RuntimeError(f"PromptTooLong: prompt has {n} tokens ... at most {MODEL_LEN - mot}")
        yield TextDelta("Sure, here is a fairly long answer that keeps the conversation growing. " * 2)
        yield ResponseFinished("completed", None, Usage(input_tokens=n, output_tokens=30))


class Outbox:
    def __init__(self):
        self.events = []

    def put(self, data, *, on_sent=None, drop=None):
        self.events.append(json.loads(data))

    def of(self, t):
        return [e for e in self.events if e["type"] == t]


def _ev(t, **kw):
    return json.dumps({"type": t, **kw})


async def _session(responder, truncation):
    out = Outbox()
    s = RealtimeSession(RealtimeSettings(), responder, out, vad_pool=POOL)
    await s.start()
    await s.handle(_ev("session.update", session={"type": "realtime", "output_modalities": ["text"],
                                                  "truncation": truncation,
                                                  "audio": {"input": {"turn_detection": None}}}))
    return s, out


async def _turn(s, out, k, audio=False):
    content = [{"type": "input_text", "text": f"Turn {k}: tell me more about item number {k} please, in detail."}]
    if audio:
        wave = (0.1 * np.sin(np.arange(24000) / 5)).astype(np.float32)  # 1 s at 24 kHz
        import base64

        from omni_agent.realtime.testing import pcm16
        content.append({"type": "input_audio", "audio": base64.b64encode(pcm16(wave)).decode(),
                        "transcript": f"spoken turn {k}"})
    await s.handle(_ev("conversation.item.create", item={"type": "message", "role": "user", "content": content}))
    await s.handle(_ev("response.create"))
    async with asyncio.timeout(10):
        while s.response is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    return out.of("response.done")[-1]["response"]


async def test_two_hundred_turns_with_auto_truncation_never_fail(processor):
    r = MeasuringResponder(processor)
    s, out = await _session(r, "auto")
    for k in range(200):
        done = await _turn(s, out, k, audio=k % 3 == 0)
        assert done["status"] == "completed", (k, done["status_details"])
    assert max(n for n, _, _ in r.prompts) <= MODEL_LEN - trunc.ANSWER_RESERVE
    assert len(s.conversation.items) == 400  # nothing deleted from the conversation, only from the view
    assert s.conversation.context_start > 300
    assert r.prompts[-1][1] >= 3  # the view still holds recent turns
    await s.close()


async def test_retention_ratio_keeps_a_stable_prefix_between_cuts(processor):
    r = MeasuringResponder(processor)
    s, out = await _session(r, {"type": "retention_ratio", "retention_ratio": 0.5})
    for k in range(60):
        assert (await _turn(s, out, k))["status"] == "completed"
    firsts = [first for _, _, first in r.prompts]
    cuts = sum(1 for a, b in zip(firsts, firsts[1:], strict=False) if a != b)
    assert 0 < cuts < 20  # "auto" would move the first item on nearly every turn once full
    upd = out.of("session.updated")[-1]["session"]
    assert upd["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.5}
    await s.close()


async def test_disabled_truncation_fails_with_a_clear_error(processor):
    r = MeasuringResponder(processor)
    s, out = await _session(r, "disabled")
    for k in range(40):
        done = await _turn(s, out, k)
        if done["status"] == "failed":
            err = done["status_details"]["error"]["message"]
            assert "truncation is disabled" in err
            break
    else:
        raise AssertionError("the conversation never outgrew the context")
    assert len(r.prompts) == k  # the responder was not called with a prompt that cannot fit
    await s.close()


async def test_media_leave_the_view_first(processor):
    r = MeasuringResponder(processor)
    s, out = await _session(r, "auto")
    for k in range(12):
        await _turn(s, out, k, audio=True)
    in_view = s.conversation.in_context
    dropped = [i for i in s.conversation.items if i.media_dropped]
    last_user = [i for i in in_view if i.role == "user"][-1]
    assert dropped and last_user.input_audio is not None and not last_user.media_dropped
    view = s.conversation.view("x")
    kept = [m for m in view.messages if m.get("item_id") == dropped[-1].id]
    assert not kept or "spoken turn" in json.dumps(kept[0]["content"])  # the transcript stands in
    await s.close()


def test_truncation_echo_and_bad_values():
    from omni_agent.realtime.config import SessionConfig
    from omni_agent.realtime.events import SessionIn

    cfg = SessionConfig().updated(SessionIn.model_validate({"type": "realtime", "truncation": "disabled"}), {})
    assert cfg.render()["truncation"] == "disabled"
    with pytest.raises(Exception, match="retention_ratio"):
        SessionIn.model_validate({"truncation": {"type": "retention_ratio", "retention_ratio": 2}})


def test_agent_history_follows_the_same_rule():
    msgs = []
    for k in range(100):
        msgs.append(HumanMessage(content=[{"type": "audio", "artifact_id": f"a{k}"}],
                                 additional_kwargs={"transcript": f"question {k}"}))
        msgs.append(AIMessage(content="", tool_calls=[{"id": f"c{k}", "name": "t", "args": {"k": k}}]))
        msgs.append(ToolMessage(content="result " * 10, tool_call_id=f"c{k}"))
        msgs.append(AIMessage(content="answer " * 20))
    kept = fit_history(msgs, 2000, audio_seconds=lambda _id: 2.0)
    total = sum(len(str(m.content).encode()) for m in kept)
    assert kept[-1] is msgs[-1] and total < 2000
    assert not isinstance(kept[0], ToolMessage)  # never starts with a result whose call was dropped
    # media go first: with room for the text of everything, audio becomes transcripts
    short = msgs[:8]
    kept = fit_history(short, 520, audio_seconds=lambda _id: 10.0)
    assert kept[0].content == "question 0"
    assert fit_history(msgs, None) is msgs
