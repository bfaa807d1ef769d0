"""Checkpoint writes encode each message once; the bytes are exactly LangGraph's own."""

import gc

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from omni_agent.agent.checkpoint_serde import MessageEncodingCache
from omni_agent.agent.graph import build_graph
from omni_agent.agent.models import ScriptedChatModel, call
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool


def _messages():
    return [HumanMessage("hi", id="m1"),
            AIMessage("", tool_calls=[{"name": "noop", "args": {"a": 1}, "id": "c1"}], id="m2"),
            ToolMessage("ok", tool_call_id="c1", id="m3")]


def test_same_bytes_as_langgraph_and_each_message_encoded_once():
    serde, plain = MessageEncodingCache(), JsonPlusSerializer()
    state = {"messages": _messages(), "steps": 2, "status": "answered"}
    first = serde.dumps_typed(state)
    assert serde.hits == 0 and serde.cached == 3
    second = serde.dumps_typed(state)
    assert serde.hits == 3  # the second write reused all three encodings
    assert first == second == plain.dumps_typed(state)
    assert serde.loads_typed(second)["messages"] == state["messages"]


def test_a_replaced_message_is_encoded_anew_and_dead_ones_are_dropped():
    serde = MessageEncodingCache()
    msgs = _messages()
    serde.dumps_typed({"messages": msgs})
    msgs[2] = ToolMessage("changed", tool_call_id="c1", id="m3")  # add_messages replaces by id: a new object
    out = serde.dumps_typed({"messages": msgs})
    assert serde.hits == 2
    assert serde.loads_typed(out)["messages"][2].content == "changed"
    del msgs, out
    gc.collect()
    assert serde.cached == 0  # entries live only as long as their messages


def test_a_message_without_id_is_not_cached():
    serde, msg = MessageEncodingCache(), HumanMessage("hi")
    serde.dumps_typed([msg])  # e.g. a pending write, before add_messages names the message
    msg.id = "m9"  # what add_messages does in place
    assert serde.cached == 0
    assert serde.loads_typed(serde.dumps_typed([msg]))[0].id == "m9"


async def _noop(args, ctx):
    return "ok"


async def test_sessions_database_uses_it_and_a_restart_reads_the_whole_history(tmp_path):
    db = tmp_path / "s.sqlite"
    saver = await open_checkpointer(db)
    assert isinstance(saver.serde, MessageEncodingCache)
    model = ScriptedChatModel([call("noop"), "done"])
    runner = AgentRunner(build_graph(model, [Tool("noop", "n", None, _noop)], saver))
    for n in range(5):
        model._i = 0
        events = [ev async for ev in runner.turn("s1", [HumanMessage(f"turn {n}")])]
        assert events[-1]["text"] == "done"
    assert saver.serde.hits > 0  # later turns reused the encodings of earlier messages
    before = await runner.messages("s1")
    await close_checkpointer(saver)
    saver = await open_checkpointer(db)
    try:
        after = await AgentRunner(build_graph(model, [], saver)).messages("s1")
    finally:
        await close_checkpointer(saver)
    assert len(after) == 5 * 4 and [m.model_dump() for m in after] == [m.model_dump() for m in before]


def test_append_messages_returns_what_add_messages_does():
    from langchain_core.messages import AIMessageChunk, RemoveMessage
    from langgraph.graph import add_messages

    from omni_agent.agent.state import append_messages

    def base():
        return _messages()

    updates = [[AIMessage("new", id="m4")],  # the fast path
               [AIMessage("new", id="m4"), HumanMessage("more", id="m5")],
               [ToolMessage("replaced", tool_call_id="c1", id="m3")],  # an id already there
               [RemoveMessage(id="m1")],
               [AIMessage("a", id="m6"), AIMessage("b", id="m6")],  # an id twice in one update
               [AIMessageChunk(content="chunk", id="m7")],
               []]
    for update in updates:
        got, want = append_messages(base(), list(update)), add_messages(base(), list(update))
        assert [(type(m), m.id, m.content) for m in got] == [(type(m), m.id, m.content) for m in want]
    fresh = HumanMessage("no id")
    got = append_messages(base(), [fresh])
    assert got[-1] is fresh and fresh.id and [m.id for m in got[:3]] == ["m1", "m2", "m3"]
