"""Graph logic with the scripted chat model: tool loop, failures, limits, confirmation, resume."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field

from omni_agent.agent.graph import RunContext, build_graph
from omni_agent.agent.models import ScriptedChatModel, call
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool, ToolResult, client_tools


class AddArgs(BaseModel):
    a: int = Field(description="first addend")
    b: int = Field(description="second addend")


class PayArgs(BaseModel):
    amount: float
    to: str


def add_tool() -> Tool:
    def add(args: AddArgs, ctx) -> ToolResult:
        ctx.progress({"step": 1, "total": 1})
        return ToolResult({"sum": args.a + args.b})

    return Tool("add", "Add two integers.", AddArgs, add)


def pay_tool(log: list) -> Tool:
    async def pay(args: PayArgs, ctx) -> str:
        log.append((args.amount, args.to))
        return f"paid {args.amount} to {args.to}"

    return Tool("pay", "Send money.", PayArgs, pay, approval=lambda a: f"pay {a.amount} to {a.to}")


async def collect(agen) -> list[dict]:
    return [ev async for ev in agen]


@pytest.fixture
async def saver(tmp_path):
    s = await open_checkpointer(tmp_path / "agent.sqlite")
    yield s
    await close_checkpointer(s)


async def test_tool_call_result_answer(saver):
    model = ScriptedChatModel([call("add", a=2, b=3), "The sum is 5."])
    runner = AgentRunner(build_graph(model, [add_tool()], saver))
    events = await collect(runner.turn("s1", [HumanMessage("what is 2+3?", id="item_1")]))
    kinds = [e["type"] for e in events]
    assert kinds.index("args") < kinds.index("call_done") < kinds.index("progress") < kinds.index("tool_result")
    assert "".join(e["delta"] for e in events if e["type"] == "text") == "The sum is 5."
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "answered"
    # the tool's result reached the model on its second step
    second = model.requests[1].messages
    assert isinstance(second[-1], ToolMessage) and '"sum": 5' in second[-1].content
    msgs = await runner.messages("s1")
    assert [type(m).__name__ for m in msgs] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert msgs[1].tool_calls[0]["args"] == {"a": 2, "b": 3}


async def test_failing_tool_reported_not_crashing(saver):
    def boom(args, ctx):
        raise RuntimeError("disk on fire")

    async def slow(args, ctx):
        await asyncio.sleep(5)

    tools = [Tool("boom", "Always fails.", None, boom), Tool("slow", "Too slow.", None, slow, timeout_s=0.05),
             add_tool()]
    model = ScriptedChatModel([call("boom"), call("slow"), call("add", a="x"), call("nope"), "Sorry, tools failed."])
    runner = AgentRunner(build_graph(model, tools, saver))
    events = await collect(runner.turn("s2", [HumanMessage("go")]))
    results = [e for e in events if e["type"] == "tool_result"]
    assert all(r["is_error"] for r in results) and len(results) == 4
    assert "RuntimeError: disk on fire" in results[0]["content"]
    assert "timed out" in results[1]["content"]
    assert "invalid arguments for add" in results[2]["content"]
    assert "unknown tool" in results[3]["content"]
    assert events[-1]["status"] == "answered" and events[-1]["text"] == "Sorry, tools failed."
    # the model saw every error
    seen = [m.content for m in model.requests[-1].messages if isinstance(m, ToolMessage)]
    assert len(seen) == 4 and all(s.startswith("error:") for s in seen)


async def test_max_steps_respected(saver):
    # different arguments each round (the same call again would be stopped by the repeat guard)
    model = ScriptedChatModel([call("add", a=i, b=1) for i in range(1, 20)], fallback="Giving up.")
    runner = AgentRunner(build_graph(model, [add_tool()], saver, max_steps=3), max_steps=3)
    events = await collect(runner.turn("s3", [HumanMessage("loop")]))
    assert sum(e["type"] == "tool_result" for e in events) == 3
    assert len(model.requests) == 4 and model.requests[-1].tools == []  # last step forced to answer
    assert events[-1]["text"] == "Giving up." and events[-1]["steps"] == 3
    # the next turn starts counting again
    events = await collect(runner.turn("s3", [HumanMessage("again")]))
    assert sum(e["type"] == "tool_result" for e in events) == 3


@pytest.mark.parametrize("approved", [True, False])
async def test_confirm_and_deny(saver, approved):
    paid: list = []
    model = ScriptedChatModel([call("pay", amount=12.5, to="bob"), "ok"])
    runner = AgentRunner(build_graph(model, [pay_tool(paid), add_tool()], saver))
    events = await collect(runner.turn("s4", [HumanMessage("pay bob")]))
    conf = [e for e in events if e["type"] == "confirmation"]
    assert len(conf) == 1 and conf[0]["tool"] == "pay" and "bob" in conf[0]["reason"]
    assert events[-1]["status"] == "waiting_confirmation" and paid == []
    assert (await runner.pending_confirmations("s4"))[0]["call_id"] == conf[0]["call_id"]
    events = await collect(runner.resolve("s4", approved))
    assert paid == ([(12.5, "bob")] if approved else [])
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["is_error"] is (not approved)
    assert events[-1]["status"] == "answered" and await runner.pending_confirmations("s4") == []


async def test_approve_all_skips_guard(saver):
    paid: list = []
    model = ScriptedChatModel([call("pay", amount=1, to="x"), "ok"])
    runner = AgentRunner(build_graph(model, [pay_tool(paid)], saver))
    events = await collect(runner.turn("s5", [HumanMessage("pay")], RunContext(approve_all=True)))
    assert not any(e["type"] == "confirmation" for e in events) and paid == [(1.0, "x")]


async def test_restart_resumes_conversation_and_confirmation(tmp_path):
    db = tmp_path / "sessions.sqlite"
    paid: list = []
    saver = await open_checkpointer(db)
    runner = AgentRunner(build_graph(ScriptedChatModel(["hello there"]), [pay_tool(paid)], saver))
    await collect(runner.turn("sess", [HumanMessage("hi", id="item_a")]))
    model = ScriptedChatModel([call("pay", amount=3, to="carol")])
    runner = AgentRunner(build_graph(model, [pay_tool(paid)], saver))
    events = await collect(runner.turn("sess", [HumanMessage("pay carol", id="item_b")]))
    assert events[-1]["status"] == "waiting_confirmation"
    await close_checkpointer(saver)  # "server restart": new connection, new graph, new model

    saver = await open_checkpointer(db)
    model = ScriptedChatModel(["Paid carol 3."])
    runner = AgentRunner(build_graph(model, [pay_tool(paid)], saver))
    pending = await runner.pending_confirmations("sess")
    assert len(pending) == 1 and pending[0]["arguments"] == {"amount": 3, "to": "carol"}
    events = await collect(runner.resolve("sess", True))
    assert paid == [(3.0, "carol")] and events[-1]["text"] == "Paid carol 3."
    msgs = await runner.messages("sess")
    assert [m.content for m in msgs if isinstance(m, HumanMessage)] == ["hi", "pay carol"]
    assert any(isinstance(m, AIMessage) and m.content == "hello there" for m in msgs)
    # the model saw the whole conversation after the restart
    assert len(model.requests[0].messages) == 5
    await close_checkpointer(saver)


async def test_client_side_tool_ends_turn_then_output_continues(saver):
    declared = client_tools([{"type": "function", "name": "get_weather", "description": "Weather.",
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    model = ScriptedChatModel([call("get_weather", city="Paris"), "Sunny in Paris."])
    runner = AgentRunner(build_graph(model, [add_tool()], saver))
    ctx = RunContext(client_tools=declared)
    events = await collect(runner.turn("s6", [HumanMessage("weather?")], ctx))
    fin = events[-1]
    assert fin["status"] == "waiting_client" and fin["client_calls"][0]["name"] == "get_weather"
    assert {t["name"] for t in model.requests[0].tools} == {"add", "get_weather"}
    out = ToolMessage(content='{"temp": 21}', tool_call_id=fin["client_calls"][0]["id"])
    events = await collect(runner.turn("s6", [out], RunContext(client_tools=declared)))
    assert events[-1]["text"] == "Sunny in Paris."


async def test_graph_overhead_small(tmp_path):
    saver = await open_checkpointer(tmp_path / "o.sqlite")
    model = ScriptedChatModel(["hi"], repeat_last=True)
    runner = AgentRunner(build_graph(model, [add_tool()], saver))
    times = []
    for i in range(12):
        t0 = time.perf_counter()
        await collect(runner.turn("perf", [HumanMessage(f"turn {i}")]))
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[len(times) // 2] < 0.1  # generous on a loaded CI box; the bench reports the real figure
    await close_checkpointer(saver)


async def test_a_repeated_call_is_answered_not_run_again(saver):
    # random weights call the same tool with the same arguments round after round, until max_steps
    model = ScriptedChatModel([call("add", a=1, b=1)], repeat_last=True, fallback="Done.")
    runner = AgentRunner(build_graph(model, [add_tool()], saver, max_steps=8), max_steps=8)
    events = await collect(runner.turn("s-repeat", [HumanMessage("loop")]))
    assert sum(e["type"] == "tool_result" for e in events) == 1
    assert model.requests[-1].tools == [] and events[-1]["text"] == "Done."
    assert len(model.requests) == 3  # call, the repeat (not run), the answer


async def test_a_small_output_budget_answers_without_tools(saver):
    from omni_agent.agent.graph import TOOL_ROUND_TOKENS, RunContext

    model = ScriptedChatModel([call("add", a=1, b=1)], repeat_last=True, fallback="Short.")
    runner = AgentRunner(build_graph(model, [add_tool()], saver), max_steps=8)
    ctx = RunContext(max_output_tokens=TOOL_ROUND_TOKENS - 1)
    events = await collect(runner.turn("s-budget", [HumanMessage("hi")], ctx))
    assert not any(e["type"] == "tool_result" for e in events)
    assert model.requests[0].tools == [] and events[-1]["text"] == "Short."
