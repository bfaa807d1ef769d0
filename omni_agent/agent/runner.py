"""Run the agent graph for one session and turn its stream into plain event dicts.

Events (``{"type": ...}``): ``text`` (delta), ``args`` (function-call argument delta), ``call_done``,
``progress`` (tool progress, e.g. a diffusion step), ``artifact``, ``tool_result``, ``observation``,
``audio`` (PCM chunk), ``confirmation`` (the graph is paused on an approval) and a last ``finished``
(status, final text, pending client calls). The realtime responder, the CLI and the bench all
consume these.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from omni_agent.agent.graph import RunContext
from omni_agent.agent.persistence import thread_config


class AgentRunner:
    """Drives a compiled agent graph per session.

    Args:
        graph: From :func:`~omni_agent.agent.graph.build_graph` (with a checkpointer).
        max_steps: The graph's step limit, to size LangGraph's recursion limit.
        durability: When checkpoints are written: ``"exit"`` (default: when a run ends or pauses on a
            confirmation, which is what resuming after a restart needs, at the least cost per turn),
            ``"async"`` or ``"sync"`` (after every step, so a crash mid-run loses nothing).
    """

    def __init__(self, graph: CompiledStateGraph, *, max_steps: int = 8, durability: str = "exit"):
        self.graph = graph
        self.durability = durability
        self.recursion_limit = 4 * max_steps + 16  # observe/think/guard/tools per step, plus slack

    def _config(self, session_id: str) -> dict:
        return thread_config(session_id, recursion_limit=self.recursion_limit)

    async def turn(self, session_id: str, messages: Sequence[AnyMessage], ctx: RunContext | None = None,
                   *, media: dict[str, dict] | None = None, items: dict[str, str] | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        """Add new messages and run until an answer, a confirmation, or a client-side call."""
        update: dict[str, Any] = {"messages": list(messages), "steps": 0, "status": "running", "pending": [],
                                  "mode": "chat"}
        if media:
            update["media"] = media
        if items:
            update["items"] = items
        async for ev in self._stream(session_id, update, ctx):
            yield ev

    async def gui_task(self, session_id: str, goal: str, ctx: RunContext | None = None
                       ) -> AsyncIterator[dict[str, Any]]:
        """Run a GUI task: observe -> think -> act until ``status`` or the step limit."""
        update = {"messages": [HumanMessage(content=goal)], "goal": goal, "mode": "gui", "steps": 0,
                  "status": "running", "pending": [], "observation": None}
        async for ev in self._stream(session_id, update, ctx):
            yield ev

    async def resolve(self, session_id: str, approved: bool, ctx: RunContext | None = None, *,
                      reason: str | None = None, update: dict[str, Any] | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
        """Answer the pending confirmation and continue the run (``update`` is merged into the state first)."""
        cmd = Command(resume={"approved": approved, "reason": reason}, update=update)
        async for ev in self._stream(session_id, cmd, ctx):
            yield ev

    async def pending_confirmations(self, session_id: str) -> list[dict[str, Any]]:
        """Confirmation requests the session is paused on (survives restarts)."""
        snap = await self.graph.aget_state(self._config(session_id))
        return [{"interrupt_id": i.id, **i.value} for i in snap.interrupts]

    async def snapshot(self, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(state values, pending confirmations) in one read."""
        snap = await self.graph.aget_state(self._config(session_id))
        return dict(snap.values), [{"interrupt_id": i.id, **i.value} for i in snap.interrupts]

    async def messages(self, session_id: str) -> list[AnyMessage]:
        snap = await self.graph.aget_state(self._config(session_id))
        return list(snap.values.get("messages", []))

    async def state(self, session_id: str) -> dict[str, Any]:
        snap = await self.graph.aget_state(self._config(session_id))
        return dict(snap.values)

    async def _stream(self, session_id: str, inp: Any, ctx: RunContext | None) -> AsyncIterator[dict[str, Any]]:
        ctx = ctx or RunContext()
        config = self._config(session_id)
        t0 = time.perf_counter()
        paused = False
        values: dict[str, Any] = {}
        modes = ["custom", "updates", "values"]
        async for mode, chunk in self.graph.astream(inp, config, context=ctx, stream_mode=modes,
                                                    durability=self.durability):
            if mode == "custom":
                yield chunk
            elif mode == "values":
                values = chunk
            elif "__interrupt__" in chunk:
                paused = True
                for intr in chunk["__interrupt__"]:
                    yield {**intr.value, "type": "confirmation", "interrupt_id": intr.id}
        msgs = values.get("messages", [])
        last_ai = next((m for m in reversed(msgs) if isinstance(m, AIMessage)), None)
        answered = {m.tool_call_id for m in msgs if isinstance(m, ToolMessage)}
        client_calls = [c for c in (last_ai.tool_calls if last_ai else []) if c["id"] not in answered] \
            if values.get("status") == "waiting_client" else []
        yield {"type": "finished",
               "status": "waiting_confirmation" if paused else values.get("status", "answered"),
               "text": last_ai.content if last_ai is not None and not last_ai.tool_calls else "",
               "client_calls": client_calls, "steps": values.get("steps", 0),
               "seconds": time.perf_counter() - t0}
