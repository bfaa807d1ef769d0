"""The real path: the tiny thinker (random weights) behind the engine, tool calls by constrained decoding."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage, ToolMessage
from pydantic import BaseModel, Field

from omni_agent.agent.engine_model import EngineChatModel
from omni_agent.agent.graph import RunContext, build_graph
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool, ToolResult

pytestmark = pytest.mark.asyncio(loop_scope="module")


class AddArgs(BaseModel):
    a: int = Field(ge=0, le=100)
    b: int = Field(ge=0, le=100)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine():
    from omni_agent.engine import AsyncEngine
    from omni_agent.settings import Settings

    eng = AsyncEngine.from_settings(Settings())
    await eng.start()
    yield eng
    await eng.shutdown()


@pytest_asyncio.fixture(loop_scope="module")
async def saver(tmp_path):
    s = await open_checkpointer(tmp_path / "e.sqlite")
    yield s
    await close_checkpointer(s)


def model(engine) -> EngineChatModel:
    return EngineChatModel(engine, max_tokens=6, max_arg_tokens=48, seed=0)


def add_tool(calls: list) -> Tool:
    def add(args: AddArgs, ctx) -> ToolResult:
        calls.append(args)
        return ToolResult({"sum": args.a + args.b})

    return Tool("add", "Add two small integers.", AddArgs, add)


async def collect(agen) -> list[dict]:
    return [e async for e in agen]


async def test_tool_call_tool_result_answer(engine, saver):
    calls: list = []
    runner = AgentRunner(build_graph(model(engine), [add_tool(calls)], saver, max_steps=1), max_steps=1)
    events = await collect(runner.turn("e1", [HumanMessage("what is 2 + 3?")], RunContext(tool_choice="add")))
    done = next(e for e in events if e["type"] == "call_done")
    streamed = "".join(e["delta"] for e in events if e["type"] == "args")
    AddArgs.model_validate_json(streamed)  # constrained decoding: the streamed JSON matches the schema
    assert len(calls) == 1 and calls[0].model_dump() == done["arguments"]
    result = next(e for e in events if e["type"] == "tool_result")
    assert not result["is_error"] and '"sum"' in result["content"]
    assert events[-1]["status"] == "answered" and events[-1]["text"]
    msgs = await runner.messages("e1")
    assert [m.type for m in msgs] == ["human", "ai", "tool", "ai"]


async def test_auto_choice_is_valid(engine, saver):
    calls: list = []
    runner = AgentRunner(build_graph(model(engine), [add_tool(calls)], saver, max_steps=2), max_steps=2)
    events = await collect(runner.turn("e2", [HumanMessage("hello")]))
    assert events[-1]["status"] == "answered"
    assert len(calls) == sum(e["type"] == "tool_result" for e in events) <= 2


async def test_confirm_deny_and_resume_after_restart(engine, tmp_path):
    db = tmp_path / "c.sqlite"
    calls: list = []
    tool = add_tool(calls)
    tool.approval = True
    saver = await open_checkpointer(db)
    runner = AgentRunner(build_graph(model(engine), [tool], saver, max_steps=1), max_steps=1)
    events = await collect(runner.turn("e3", [HumanMessage("add")], RunContext(tool_choice="add")))
    assert events[-1]["status"] == "waiting_confirmation" and calls == []
    await close_checkpointer(saver)
    saver = await open_checkpointer(db)
    runner = AgentRunner(build_graph(model(engine), [tool], saver, max_steps=1), max_steps=1)
    events = await collect(runner.resolve("e3", False))
    assert calls == [] and events[-1]["status"] == "answered"
    msgs = await runner.messages("e3")
    assert isinstance(msgs[2], ToolMessage) and "denied" in msgs[2].content
    await close_checkpointer(saver)


async def test_failing_tool_reported(engine, saver):
    def broken(args: AddArgs, ctx):
        raise ValueError("calculator unplugged")

    runner = AgentRunner(build_graph(model(engine), [Tool("add", "Add.", AddArgs, broken)], saver, max_steps=1),
                         max_steps=1)
    events = await collect(runner.turn("e4", [HumanMessage("add")], RunContext(tool_choice="add")))
    err = next(e for e in events if e["type"] == "tool_result")
    assert err["is_error"] and "calculator unplugged" in err["content"]
    assert events[-1]["status"] == "answered"


async def test_gui_step_with_tiny_thinker(engine, saver):
    from omni_agent.agent.gui import GuiEnv
    from tools.android.adb import AdbDevice
    from tools.android.sim import SimulatedDevice
    from tools.android.testing import adb_server

    sim = SimulatedDevice().start()
    try:
        with adb_server() as port:
            env = GuiEnv(AdbDevice(sim.serial, port=port), model_max_side=224)
            runner = AgentRunner(build_graph(model(engine), [env.tool()], saver, gui=env, max_steps=2), max_steps=2)
            events = await collect(runner.gui_task("e5", "Turn on Wi-Fi", RunContext(approve_all=True)))
            state = await runner.state("e5")
    finally:
        sim.stop()
    calls = [e for e in events if e["type"] == "call_done"]
    assert 1 <= len(calls) <= 2 and all(c["name"] == "android_action" for c in calls)
    assert all("action_type" in c["arguments"] for c in calls)  # a schema-valid action every step
    assert events[-1]["status"] in ("max_steps", "complete", "infeasible")
    assert len(state["trajectory"]) == len(calls)


async def test_responder_from_settings_voice_turn(engine, tmp_path):
    import asyncio

    from audio.tts import StreamingTTS
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.realtime.responder import (
        AudioDelta,
        Conversation,
        ResponseFinished,
        ResponseOptions,
        TextDelta,
    )
    from omni_agent.settings import Settings

    settings = Settings(agent={"checkpoint_db": str(tmp_path / "sessions.sqlite")})
    r = await AgentResponder.from_settings(settings, engine, StreamingTTS.build(), image_tools=False)
    try:
        item = {"id": "item_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        conv = Conversation(messages=[{"role": "user", "content": "hi"}], items=[item])
        opts = ResponseOptions(modalities=("audio",), temperature=0.0, max_output_tokens=6,
                               metadata={"session_id": "voice"})
        events = [e async for e in r.respond(conv, opts, asyncio.Event())]
    finally:
        await r.aclose()
    assert any(isinstance(e, TextDelta) for e in events)
    audio = [e for e in events if isinstance(e, AudioDelta)]
    assert audio and sum(len(a.pcm) for a in audio) > 0
    fin = events[-1]
    assert isinstance(fin, ResponseFinished) and fin.usage.output_tokens > 0
    # a 6-token answer is usually cut: "incomplete" like DirectResponder's (OpenAI: max_output_tokens)
    assert fin.status == "completed" or (fin.status, fin.reason) == ("incomplete", "max_output_tokens")


async def test_spoken_answer_feeds_thinker_states_to_the_talker(engine, saver):
    from audio.bpe import CodeBPE
    from audio.codec import load_codec
    from audio.talker import Talker
    from audio.tts import StreamingTTS

    bpe = CodeBPE.default()
    talker = Talker.build("tiny", bpe=bpe, audio_vocab_size=bpe.vocab_size, thinker_hidden_size=engine.thinker.hidden_size)
    tts = StreamingTTS(talker, load_codec("mel-vq"))
    seen: list = []
    real_stream = tts.stream

    async def spy(text, *, hidden=None, voice=None, cancel=None):
        async def states():
            async for h in hidden:
                seen.append(h.shape)
                yield h
        async for chunk in real_stream(text, hidden=states() if hidden is not None else None, voice=voice,
                                       cancel=cancel):
            yield chunk

    tts.stream = spy
    runner = AgentRunner(build_graph(model(engine), [], saver, tts=tts))
    events = await collect(runner.turn("e6", [HumanMessage("say hi")], RunContext(modalities=("audio",))))
    assert any(e["type"] == "audio" for e in events) and events[-1]["status"] == "answered"
    assert seen and all(s[-1] == engine.thinker.hidden_size for s in seen)


async def test_response_usage_sums_the_turns_engine_requests(engine, saver):
    """ResponseFinished carries the engine's token counts summed over every model call of the turn."""
    from omni_agent.agent.artifacts import ArtifactStore
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.realtime.responder import Conversation, ResponseFinished, ResponseOptions

    calls: list = []
    graph = build_graph(model(engine), [add_tool(calls)], saver, max_steps=1)
    responder = AgentResponder(AgentRunner(graph, max_steps=1), ArtifactStore())
    outputs: list = []
    real = engine.generate

    async def counting(request):  # what the engine itself reported for each request of the turn
        last = None
        async for out in real(request):
            last = out
            yield out
        outputs.append(last)

    engine.generate = counting
    try:
        conv = Conversation(messages=[{"role": "user", "content": "what is 2 + 3?"}],
                            items=[{"id": "u_usage", "type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": "what is 2 + 3?"}]}])
        events = [e async for e in responder.respond(conv, ResponseOptions(modalities=("text",), tool_choice="add"),
                                                     asyncio.Event())]
    finally:
        del engine.generate
    fin = events[-1]
    assert isinstance(fin, ResponseFinished) and fin.status in ("completed", "incomplete")
    assert len(calls) == 1 and len(outputs) >= 2  # arguments, then the answer after the tool result
    assert fin.usage.input_tokens == sum(o.prompt_tokens for o in outputs) > 0
    assert fin.usage.output_tokens == sum(o.completion_tokens for o in outputs) > 0
    assert fin.usage.cached_tokens == sum(o.cached_tokens for o in outputs)
    assert fin.usage.cached_tokens > 0  # the answer request reuses the arguments request's prefix


@pytest.mark.parametrize("limit", [6, 40])
async def test_max_output_tokens_bounds_tool_decisions_and_arguments(engine, limit):
    from omni_agent.agent.models import ModelRequest

    m = EngineChatModel(engine, max_tokens=256, max_arg_tokens=144, seed=0)
    spec = add_tool([]).spec()
    turn = await m.agenerate(ModelRequest(messages=[HumanMessage("add 2 and 3")], tools=[spec],
                                          tool_choice="required", max_tokens=limit))
    assert turn.usage["completion_tokens"] <= limit
    if turn.tool_calls:
        assert turn.finish_reason != "length"
    else:  # the budget ran out inside the decision or the arguments: an incomplete turn, no broken call
        assert turn.finish_reason == "length"
