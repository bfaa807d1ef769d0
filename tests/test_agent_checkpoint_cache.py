"""The checkpointer keeps each session's latest checkpoint in memory and writes every one through to SQLite."""

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from omni_agent.agent.checkpoint_cache import CachingSqliteSaver
from omni_agent.agent.graph import build_graph
from omni_agent.agent.models import ScriptedChatModel, call
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer, thread_config
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool


async def _noop(args, ctx):
    return "ok"


async def test_reads_come_from_memory_and_the_file_holds_the_same(tmp_path, monkeypatch):
    db = tmp_path / "c.sqlite"
    saver = await open_checkpointer(db)
    assert isinstance(saver, CachingSqliteSaver)
    reads = []
    orig = AsyncSqliteSaver.aget_tuple

    async def counted(self, config):
        reads.append(config)
        return await orig(self, config)

    monkeypatch.setattr(AsyncSqliteSaver, "aget_tuple", counted)
    model = ScriptedChatModel([call("noop"), "done"])
    runner = AgentRunner(build_graph(model, [Tool("noop", "n", None, _noop)], saver))
    for n in range(20):
        model._i = 0
        async for _ in runner.turn("s1", [HumanMessage(f"turn {n}")]):
            pass
    assert len(reads) <= 1  # only the very first run read the database
    cached = await runner.messages("s1")
    await close_checkpointer(saver)
    monkeypatch.undo()
    plain = await open_checkpointer(db)  # a restart: everything came from the file
    fresh = await AgentRunner(build_graph(model, [], plain)).messages("s1")
    assert [m.content for m in fresh] == [m.content for m in cached] and len(fresh) == 80
    await close_checkpointer(plain)


async def test_pending_writes_are_read_from_the_database(tmp_path):
    saver = await open_checkpointer(tmp_path / "c.sqlite")
    model = ScriptedChatModel(["hi"])
    graph = build_graph(model, [], saver)
    async for _ in AgentRunner(graph).turn("s2", [HumanMessage("x")]):
        pass
    cfg = thread_config("s2")
    tup = await saver.aget_tuple(cfg)
    await saver.aput_writes(tup.config, [("messages", [])], "task1")
    assert ("s2", "") not in saver._latest
    again = await saver.aget_tuple(cfg)
    assert again.pending_writes and again.checkpoint["id"] == tup.checkpoint["id"]
    await close_checkpointer(saver)
