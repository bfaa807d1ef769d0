"""AgentResponder: the realtime Responder protocol over the graph (scripted model, fake TTS)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from omni_agent.agent.artifacts import ArtifactStore, artifacts_router
from omni_agent.agent.graph import build_graph
from omni_agent.agent.models import ScriptedChatModel, call
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
from omni_agent.agent.responder import AgentResponder, parse_approval
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool, ToolResult
from omni_agent.realtime.responder import (
    Artifact,
    AudioDelta,
    ConfirmationRequest,
    Conversation,
    FunctionCallDelta,
    FunctionCallDone,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    ToolProgress,
)
from omni_agent.settings import Settings


@dataclass
class Chunk:
    pcm: np.ndarray
    text: str
    sentence_index: int


class FakeTTS:
    """Speaks every text delta as 10 ms of a tone (enough to check the wiring)."""

    sample_rate = 24000

    async def stream(self, text, *, hidden=None, voice=None, cancel=None):
        i = 0
        async for delta in text:
            if cancel is not None and cancel.is_set():
                return
            yield Chunk(np.full(240, 0.1, dtype=np.float32), delta, i)
            i += 1


class PayArgs(BaseModel):
    amount: float
    to: str


def user(iid: str, text: str) -> dict:
    return {"id": iid, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(iid: str, text: str) -> dict:
    return {"id": iid, "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def conv(items: list[dict]) -> Conversation:
    msgs = []
    for it in items:
        if it["type"] == "message":
            msgs.append({"role": it["role"], "content": "".join(p.get("text", "") for p in it["content"])})
        else:
            msgs.append({"role": "assistant" if it["type"] == "function_call" else "user", "content": "..."})
    return Conversation(messages=msgs, items=items)


def opts(**kw) -> ResponseOptions:
    kw.setdefault("modalities", ("text",))
    kw.setdefault("metadata", {"session_id": "sess_1"})
    return ResponseOptions(**kw)


async def respond(r: AgentResponder, items: list[dict], **kw) -> list:
    return [ev async for ev in r.respond(conv(items), opts(**kw), asyncio.Event())]


@pytest.fixture
async def saver(tmp_path):
    s = await open_checkpointer(tmp_path / "r.sqlite")
    yield s
    await close_checkpointer(s)


def make(model, tools, saver, store=None, tts=None) -> AgentResponder:
    store = store or ArtifactStore()
    graph = build_graph(model, tools, saver, tts=tts, artifacts=store)
    return AgentResponder(AgentRunner(graph), store)


def test_parse_approval():
    assert parse_approval("yes") and parse_approval('{"approved": true}') and parse_approval("OK.")
    assert not parse_approval("no") and not parse_approval('{"approved": false}') and not parse_approval("")


async def test_voice_turn_think_then_speak(saver):
    r = make(ScriptedChatModel(["Hello there, friend."]), [], saver, tts=FakeTTS())
    events = await respond(r, [user("item_1", "hi")], modalities=("audio",))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    audio = [e for e in events if isinstance(e, AudioDelta)]
    assert text == "Hello there, friend." and len(audio) == 3 and audio[0].sample_rate == 24000
    assert isinstance(events[-1], ResponseFinished) and events[-1].status == "completed"
    assert "first_audio_ms" in events[-1].latency


async def test_echoed_items_are_not_duplicated_and_truncation_applies(saver):
    r = make(ScriptedChatModel(["The first answer is long.", "Second."]), [], saver)
    await respond(r, [user("item_1", "hi")])
    # the session echoes our answer as an item (truncated by a barge-in) and adds a new user item
    items = [user("item_1", "hi"), assistant("item_2", "The first"), user("item_3", "and?")]
    await respond(r, items)
    msgs = await r.runner.messages("sess_1")
    assert [m.type for m in msgs] == ["human", "ai", "human", "ai"]
    assert msgs[1].content == "The first" and msgs[3].content == "Second."


async def test_client_side_function_call_round_trip(saver):
    model = ScriptedChatModel([call("get_weather", city="Paris"), "It is sunny in Paris."])
    r = make(model, [], saver)
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    events = await respond(r, [user("item_1", "weather?")], tools=tools)
    deltas = "".join(e.arguments_delta for e in events if isinstance(e, FunctionCallDelta))
    done = next(e for e in events if isinstance(e, FunctionCallDone))
    assert json.loads(deltas) == json.loads(done.arguments) == {"city": "Paris"}
    items = [user("item_1", "weather?"),
             {"id": "item_2", "type": "function_call", "call_id": done.call_id, "name": "get_weather",
              "arguments": done.arguments},
             {"id": "item_3", "type": "function_call_output", "call_id": done.call_id, "output": '{"sky": "clear"}'}]
    events = await respond(r, items, tools=tools)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is sunny in Paris."
    assert '{"sky": "clear"}' in model.requests[-1].messages[-1].content
    msgs = await r.runner.messages("sess_1")
    assert sum(m.type == "ai" and bool(m.tool_calls) for m in msgs) == 1  # the echoed call was linked


async def test_confirmation_over_protocol_survives_restart(tmp_path):
    paid = []

    def pay(a: PayArgs, ctx):
        paid.append(a.to)
        return "paid"

    tool = Tool("pay", "Pay someone.", PayArgs, pay, approval=True)
    saver = await open_checkpointer(tmp_path / "s.sqlite")
    r = make(ScriptedChatModel([call("pay", amount=5, to="dan")]), [tool], saver)
    events = await respond(r, [user("item_1", "pay dan 5")])
    req = next(e for e in events if isinstance(e, ConfirmationRequest))
    assert req.action.startswith("pay(") and paid == []
    await close_checkpointer(saver)

    saver = await open_checkpointer(tmp_path / "s.sqlite")  # restart
    r = make(ScriptedChatModel(["Done, paid Dan."]), [tool], saver)
    reply = {"id": "item_9", "type": "function_call_output", "call_id": req.call_id, "output": "yes"}
    events = await respond(r, [user("item_1", "pay dan 5"), reply])
    assert paid == ["dan"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Done, paid Dan."
    assert await r.runner.pending_confirmations("sess_1") == []
    await close_checkpointer(saver)


async def test_new_input_while_pending_denies(saver):
    paid = []
    tool = Tool("pay", "Pay.", PayArgs, lambda a, c: paid.append(a) or "paid", approval=True)
    model = ScriptedChatModel([call("pay", amount=1, to="eve"), "Okay, I did not pay."])
    r = make(model, [tool], saver)
    await respond(r, [user("item_1", "pay eve")])
    events = await respond(r, [user("item_1", "pay eve"), user("item_2", "actually, never mind")])
    assert paid == [] and "".join(e.text for e in events if isinstance(e, TextDelta)) == "Okay, I did not pay."
    seen = model.requests[-1].messages
    assert seen[-2].content == "actually, never mind" and "denied" in seen[-1].content


async def test_artifact_event_and_http_route(saver):
    store = ArtifactStore()

    def draw(args, ctx):
        from PIL import Image

        ctx.progress({"step": 1, "total": 2, "fraction": 0.5, "message": "step 1/2"})
        ref = ctx.artifacts.put_image(Image.new("RGB", (32, 32), "red"))
        return ToolResult({"image_id": ref.id}, artifacts=[ref])

    r = make(ScriptedChatModel([call("draw"), "Here it is."]), [Tool("draw", "Draw.", None, draw)], saver, store)
    events = await respond(r, [user("item_1", "draw")])
    art = next(e for e in events if isinstance(e, Artifact))
    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert [p.fraction for p in progress] == [0.0, 0.5, 1.0]
    app = FastAPI()
    app.include_router(artifacts_router(store, Settings()))
    client = TestClient(app)
    got = client.get(art.uri)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content[:4] == b"\x89PNG"
    assert client.get("/v1/artifacts/art_000000000000000000000000").status_code == 404
    assert client.get("/v1/artifacts/..%2Fetc%2Fpasswd").status_code == 404


async def test_cancel_stops_a_running_tool(saver):
    started = asyncio.Event()

    async def slow(args, ctx):
        started.set()
        await asyncio.sleep(30)

    r = make(ScriptedChatModel([call("slow")]), [Tool("slow", "Slow.", None, slow)], saver)
    cancel = asyncio.Event()

    async def trip():
        await started.wait()
        cancel.set()

    asyncio.get_running_loop().create_task(trip())
    events = [ev async for ev in r.respond(conv([user("item_1", "go")]), opts(), cancel)]
    assert isinstance(events[-1], ResponseFinished) and events[-1].status == "cancelled"


async def test_http_chat_without_items_is_stateless(saver):
    model = ScriptedChatModel(["one", "two"])
    r = make(model, [], saver)
    c = Conversation(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    events = [ev async for ev in r.respond(c, ResponseOptions(modalities=("text",)), asyncio.Event())]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one"
    assert model.requests[0].instructions == "be brief"
    assert [m.content for m in model.requests[0].messages] == ["hi"]  # instructions are not a message


def test_artifact_store_on_disk_survives_restart(tmp_path):
    from PIL import Image

    ref = ArtifactStore(tmp_path / "arts").put_image(Image.new("RGB", (8, 8), "blue"), meta={"prompt": "x"})
    again = ArtifactStore(tmp_path / "arts")
    data, mime, meta = again.get(ref.id)
    assert mime == "image/png" and meta["prompt"] == "x" and again.load_image(ref.id).size == (8, 8)
    assert again.get("../../etc/passwd") is None
