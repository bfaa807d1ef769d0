"""The agent graph: think -> (guard -> tools -> think)* -> speak, plus observe for GUI runs.

```
            ┌──────────── chat ────────────┐
START ──────┤                              ▼
            └─ gui ─> observe ─────────> think ──(answer, audio)──> speak ──> END
                                           │ └──(answer, text only)────────> END
                        ▲                  │
                        │             (tool calls)
                        │                  ▼
                        │    guard (only when a call needs approval: interrupt)
                        │                  ▼
                        └── gui ─────── tools ── chat ──> think
                                           └── status complete/infeasible, client-side call ──> END
```

Nodes are small functions returning partial state updates. The model, the tools, the TTS, the
artifact store and the GUI environment are passed in. Per-run options (modalities, voice, cancel,
the client's own tools, approve-all) come in a :class:`RunContext` (LangGraph runtime context).
Streaming goes through LangGraph's custom stream as small dicts (see :mod:`omni_agent.agent.runner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from omni_agent.agent.history import AudioLengths, fit_history
from omni_agent.agent.models import ChatModel, ModelRequest, ToolChoice
from omni_agent.agent.speech import SpeechPipe
from omni_agent.agent.state import AgentState
from omni_agent.agent.tools import Tool, ToolContext, ToolResult, index_tools
from omni_agent.realtime.truncation import tokenizer_counter

GUI_DONE = ("complete", "infeasible")


@dataclass
class RunContext:
    """Per-run options (LangGraph runtime context); not checkpointed."""

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to stop the run (barge-in, response.cancel): tools and speech stop cooperatively."""
    modalities: tuple[str, ...] = ("text",)
    """Include ``"audio"`` to run the speak node's TTS."""
    voice: str | None = None
    tool_choice: ToolChoice = "auto"
    """Applies to the first think step of the run; later steps use ``auto``."""
    client_tools: list[Tool] = field(default_factory=list)
    """Tools the client declared (``session.update``); their calls end the turn for the client to run."""
    approve_all: bool = False
    """Skip confirmation (CLI ``--approve-all``)."""
    instructions: str | None = None
    """System instructions (realtime ``session.instructions``)."""
    temperature: float | None = None
    """Sampling temperature for the model (None: the model's default)."""
    max_output_tokens: int | None = None
    """Output-token budget of the whole run, tool calls included, as OpenAI's ``max_output_tokens``
    (None: the model's default per think step)."""
    tokens_out: int = 0
    """Output tokens the run's think steps have spent so far (counted against ``max_output_tokens``)."""
    sampling: dict[str, Any] | None = None
    """Extra engine sampling fields for answers (HTTP ``seed``, ``top_p``, ``stop``, ...)."""
    server_tools: bool = True
    """Offer the server's own tools (images, GUI); the HTTP chat route offers only the client's."""
    speech: SpeechPipe | None = None
    """Set by think when it starts speaking; drained by speak."""
    context_tokens: int | None = None
    """Tokens the history may take in the prompt (the realtime session's truncation budget); None: all."""
    retention_ratio: float | None = None
    """With ``context_tokens``: cut to this fraction of it when cutting (``agent/history.py``)."""


# A tool round costs a decision (~10 tokens) plus its JSON arguments: with less output budget left than
# this, the model answers in words instead, so a small max_output_tokens still produces a reply.
TOOL_ROUND_TOKENS = 64


@dataclass
class GraphConfig:
    max_steps: int = 8
    tool_timeout_s: float = 300.0
    max_reply_tokens: int | None = None
    """Output-token budget of a chat run whose client set none (``AgentSettings.max_reply_tokens``)."""
    max_reply_audio_s: float | None = None
    """Most seconds of speech per reply (``AgentSettings.max_reply_audio_s``)."""


def _writer():
    try:
        return get_stream_writer()
    except Exception:  # called outside a run (unit tests of a node)
        return lambda _chunk: None


class AgentGraph:
    """Builds and holds the node functions; :func:`build_graph` is the public entry."""

    def __init__(self, model: ChatModel, tools: list[Tool], *, config: GraphConfig, tts: Any = None,
                 artifacts: Any = None, gui: Any = None):
        self.model = model
        self.tools = index_tools(tools)
        self.config = config
        self.tts = tts
        self.artifacts = artifacts
        self.gui = gui
        # Feed the thinker's states to the talker only when the widths agree (a tiny talker paired
        # with another preset's thinker would reject them).
        talker_width = getattr(getattr(getattr(tts, "talker", None), "config", None), "thinker_hidden_size", None)
        self.speak_hidden = talker_width is not None and talker_width == getattr(model, "hidden_size", None)
        self.audio_lengths = AudioLengths(artifacts)
        self.count_text = tokenizer_counter(getattr(model, "engine", None))

    # --- helpers -----------------------------------------------------------------------------

    def _all_tools(self, ctx: RunContext) -> dict[str, Tool]:
        own = self.tools if ctx.server_tools else {}
        if not ctx.client_tools:
            return own
        return {**own, **index_tools(ctx.client_tools)}

    def _images_for(self, state: AgentState) -> dict[str, Any]:
        images: dict[str, Any] = {}
        if self.gui is not None and state.get("observation"):
            images.update(self.gui.images_for(state["observation"]))
        return images

    # --- nodes -------------------------------------------------------------------------------

    async def observe(self, state: AgentState) -> dict[str, Any]:
        if state.get("steps", 0) >= self.config.max_steps:
            return {"status": "max_steps"}
        obs = await self.gui.observe(step=state.get("steps", 0))
        _writer()({"type": "observation", "observation": obs})
        return {"observation": obs}

    async def think(self, state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context or RunContext()
        write = _writer()
        steps = state.get("steps", 0)
        tools = self._all_tools(ctx)
        gui = state.get("mode") == "gui"
        choice: ToolChoice = ctx.tool_choice if steps == 0 else "auto"
        if gui and choice == "auto":
            choice = "required"  # a GUI step always acts (status/answer are actions too)
        if steps >= self.config.max_steps:
            choice = "none"  # step limit: answer with what we have

        # A GUI task is bounded by its steps; a chat run by its output budget (the client's, else the default).
        limit = ctx.max_output_tokens if ctx.max_output_tokens is not None or gui else self.config.max_reply_tokens
        budget = None if limit is None else limit - ctx.tokens_out
        if budget is not None and budget <= 0:  # the run spent its output budget on tool calls
            write({"type": "usage", "finish_reason": "length"})
            return {"status": "answered"}
        if budget is not None and budget < TOOL_ROUND_TOKENS and choice == "auto" and not gui:
            choice = "none"  # no room for a tool round and an answer: answer now
        speaking = "audio" in ctx.modalities and self.tts is not None

        def pipe() -> SpeechPipe:
            if ctx.speech is None:
                ctx.speech = SpeechPipe(self.tts, write, voice=ctx.voice, cancel=ctx.cancel,
                                        hidden=self.speak_hidden, max_seconds=self.config.max_reply_audio_s)
            return ctx.speech

        def on_text(delta: str) -> None:
            write({"type": "text", "delta": delta})
            if speaking:
                pipe().feed(delta)

        def on_hidden(states: Any) -> None:
            pipe().feed_hidden(states)

        def on_args(call_id: str, name: str, delta: str) -> None:
            write({"type": "args", "call_id": call_id, "name": name, "delta": delta})

        history = list(state.get("messages", []))
        if ctx.context_tokens is not None:  # the history follows the session's truncation rule
            server_specs = [t.spec() for t in tools.values() if not t.client_side] if choice != "none" else []
            room = ctx.context_tokens - self.count_text(str(server_specs))
            history = fit_history(history, room, retention_ratio=ctx.retention_ratio,
                                  audio_seconds=self.audio_lengths, count=self.count_text)
        request = ModelRequest(
            messages=history,
            tools=[t.spec() for t in tools.values()] if choice != "none" else [],
            tool_choice=choice, observation=state.get("observation"), images=self._images_for(state),
            on_text=on_text, on_args=on_args, cancel=ctx.cancel, instructions=ctx.instructions,
            temperature=ctx.temperature, max_tokens=budget,
            on_hidden=on_hidden if speaking and self.speak_hidden else None, sampling=ctx.sampling)
        turn = await self.model.agenerate(request)
        ctx.tokens_out += int((turn.usage or {}).get("completion_tokens") or 0)
        if turn.usage or turn.finish_reason:  # the responder sums these over the turn's model calls
            write({"type": "usage", **turn.usage, "finish_reason": turn.finish_reason})
        if turn.tool_calls and not gui and _repeats(state.get("messages", []), turn.tool_calls):
            # The same call with the same arguments again in this turn: its result is already in the
            # history, running it again only loops (random weights do this until max_steps). Answer.
            left = None if budget is None else max(1, budget - int((turn.usage or {}).get("completion_tokens") or 0))
            request.tools, request.tool_choice, request.max_tokens = [], "none", left
            turn = await self.model.agenerate(request)
            ctx.tokens_out += int((turn.usage or {}).get("completion_tokens") or 0)
            write({"type": "usage", **turn.usage, "finish_reason": turn.finish_reason})
        calls = [{"id": c.id, "name": c.name, "args": c.arguments} for c in turn.tool_calls]
        for c in calls:
            write({"type": "call_done", "call_id": c["id"], "name": c["name"], "arguments": c["args"]})
        message = AIMessage(content=turn.text, tool_calls=calls, id="msg_" + uuid.uuid4().hex[:20])
        pending = [{**c, "approval": None if ctx.approve_all else self._approval(tools.get(c["name"]), c)}
                   for c in calls]
        update: dict[str, Any] = {"messages": [message], "pending": pending}
        if calls:
            update["steps"] = steps + 1
        elif not speaking:
            update["status"] = "answered"  # a text answer needs no speak step
        return update

    @staticmethod
    def _approval(tool: Tool | None, call: dict[str, Any]) -> str | None:
        if tool is None or tool.client_side:
            return None
        try:
            return tool.approval_reason(tool.parse_args(call["args"]))
        except ValueError:
            return None  # the tools node reports bad arguments to the model

    async def guard(self, state: AgentState) -> dict[str, Any]:
        approved, denials = [], []
        for call in state.get("pending", []):
            reason = call.get("approval")
            if reason is None:
                approved.append(call)
                continue
            # Re-runs of this node after a resume replay earlier answers in order (LangGraph semantics).
            reply = interrupt({"type": "confirmation", "call_id": call["id"], "tool": call["name"],
                               "arguments": call["args"], "reason": reason})
            ok = reply if isinstance(reply, bool) else bool(reply.get("approved")) if isinstance(reply, dict) else False
            if ok:
                approved.append(call)
            else:
                note = reply.get("reason") if isinstance(reply, dict) else None
                denials.append(ToolMessage(
                    content=f"The user denied this action ({call['name']})" + (f": {note}" if note else "."),
                    tool_call_id=call["id"], name=call["name"], status="error"))
                _writer()({"type": "tool_result", "call_id": call["id"], "name": call["name"],
                           "content": denials[-1].content, "is_error": True, "denied": True})
        return {"pending": approved, "messages": denials}

    async def tools_node(self, state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context or RunContext()
        write = _writer()
        tools = self._all_tools(ctx)
        messages, artifacts, trajectory = [], [], []
        status = "running"
        media = {**state.get("media", {}), **{a["id"]: a for a in state.get("artifacts", [])}}
        waiting_client = False
        for call in state.get("pending", []):
            tool = tools.get(call["name"])
            if tool is not None and tool.client_side:
                waiting_client = True
                continue
            result = await self._run_one(tool, call, ctx, media, write)
            for ref in result.artifacts:
                meta = {"id": ref.id, "mime": ref.mime, "kind": ref.kind, "tool": call["name"],
                        "call_id": call["id"], "url": f"/v1/artifacts/{ref.id}", **ref.meta}
                artifacts.append(meta)
                write({"type": "artifact", **meta})
            messages.append(ToolMessage(content=result.text(), tool_call_id=call["id"], name=call["name"],
                                        status="error" if result.is_error else "success",
                                        artifact=[a.id for a in result.artifacts] or None))
            write({"type": "tool_result", "call_id": call["id"], "name": call["name"],
                   "content": result.text(), "is_error": result.is_error})
            if state.get("mode") == "gui":
                trajectory.append({"step": state.get("steps", 0), "action": call["args"], "tool": call["name"],
                                   "result": result.text(), "ok": not result.is_error,
                                   "screen": (state.get("observation") or {}).get("screenshot")})
            if result.data.get("status") in GUI_DONE:
                status = result.data["status"]
        update: dict[str, Any] = {"messages": messages, "pending": [], "artifacts": artifacts}
        if trajectory:
            update["trajectory"] = trajectory
        if status != "running":
            update["status"] = status
        elif waiting_client:
            update["status"] = "waiting_client"
        return update

    async def _run_one(self, tool: Tool | None, call: dict[str, Any], ctx: RunContext,
                       media: dict[str, Any], write: Any) -> ToolResult:
        if tool is None:
            return ToolResult(f"error: unknown tool {call['name']!r}", is_error=True)
        try:
            args = tool.parse_args(call["args"])
        except ValueError as e:
            return ToolResult(f"error: {e}", is_error=True)
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()

        def progress(info: dict[str, Any]) -> None:
            part = {"type": "progress", "call_id": call["id"], "name": call["name"], **info}
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                write(part)
            else:  # sync tools report from their worker thread
                loop.call_soon_threadsafe(write, part)

        tctx = ToolContext(call_id=call["id"], tool_name=tool.name, progress=progress, cancel=cancel,
                           artifacts=self.artifacts, media=media)
        timeout = tool.timeout_s or self.config.tool_timeout_s
        watcher = asyncio.create_task(_mirror(ctx.cancel, cancel))
        try:
            return await asyncio.wait_for(tool.run(args, tctx), timeout)
        except TimeoutError:
            cancel.set()
            return ToolResult(f"error: {tool.name} timed out after {timeout:g} s", is_error=True)
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception as e:  # a failing tool is reported to the model, never crashes the graph
            return ToolResult(f"error: {tool.name} failed: {type(e).__name__}: {e}", is_error=True)
        finally:
            watcher.cancel()

    async def speak(self, state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context or RunContext()
        if "audio" in ctx.modalities and self.tts is not None:
            if ctx.speech is None:  # answer text came without streaming (e.g. a resumed run)
                last = state["messages"][-1] if state.get("messages") else None
                text = last.content if isinstance(last, AIMessage) and isinstance(last.content, str) else ""
                if text:
                    ctx.speech = SpeechPipe(self.tts, _writer(), voice=ctx.voice, cancel=ctx.cancel)
                    ctx.speech.feed(text)
            if ctx.speech is not None:
                pipe, ctx.speech = ctx.speech, None
                await pipe.finish()
        return {"status": "answered"}

    # --- routing -----------------------------------------------------------------------------

    def route_start(self, state: AgentState) -> str:
        return "observe" if state.get("mode") == "gui" and self.gui is not None else "think"

    def route_observe(self, state: AgentState) -> str:
        return END if state.get("status") == "max_steps" else "think"

    def route_think(self, state: AgentState) -> str:
        pending = state.get("pending")
        if pending:
            # the guard is a step of its own only when a call needs approval
            return "guard" if any(c.get("approval") for c in pending) else "tools"
        return END if state.get("mode") == "gui" or state.get("status") == "answered" else "speak"

    def route_tools(self, state: AgentState) -> str:
        if state.get("status") in (*GUI_DONE, "waiting_client"):
            return END
        return "observe" if state.get("mode") == "gui" and self.gui is not None else "think"

    def compile(self, checkpointer: Any = None) -> CompiledStateGraph:
        g = StateGraph(AgentState, context_schema=RunContext)
        g.add_node("think", self.think)
        g.add_node("guard", self.guard)
        g.add_node("tools", self.tools_node)
        g.add_node("speak", self.speak)
        loop_back = ["think", END]
        if self.gui is not None:
            g.add_node("observe", self.observe)
            g.add_conditional_edges("observe", self.route_observe, ["think", END])
            loop_back.append("observe")
        g.add_conditional_edges(START, self.route_start, loop_back[:1] + loop_back[2:])
        g.add_conditional_edges("think", self.route_think, ["guard", "tools", "speak", END])
        g.add_edge("guard", "tools")
        g.add_conditional_edges("tools", self.route_tools, loop_back)
        g.add_edge("speak", END)
        return g.compile(checkpointer=checkpointer)


async def _mirror(src: asyncio.Event, dst: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await src.wait()
        dst.set()


def _repeats(messages: list[Any], calls: list[Any]) -> bool:
    """Every call in ``calls`` was already made, with the same arguments, since the last user message."""
    made = set()
    for msg in reversed(messages):
        if getattr(msg, "type", None) == "human":
            break
        for c in getattr(msg, "tool_calls", None) or []:
            made.add((c["name"], json.dumps(c["args"], sort_keys=True)))
    return all((c.name, json.dumps(c.arguments, sort_keys=True)) in made for c in calls)


def build_graph(model: ChatModel, tools: list[Tool], checkpointer: Any = None, *, max_steps: int = 8,
                tool_timeout_s: float = 300.0, tts: Any = None, artifacts: Any = None,
                gui: Any = None, max_reply_tokens: int | None = None,
                max_reply_audio_s: float | None = None) -> CompiledStateGraph:
    """Compile the agent graph.

    Args:
        model: The chat model for the think node (engine-backed or scripted).
        tools: Server-side tools (image tools, the GUI action tool, ...).
        checkpointer: A LangGraph checkpointer (``AsyncSqliteSaver`` keyed by session id); None keeps
            no state between runs (and confirmations cannot be resumed).
        max_steps: Most tool rounds per turn (``AgentSettings.max_steps``); then the model must answer
            (chat) or the run stops with status ``max_steps`` (GUI).
        tool_timeout_s: Default per-call limit (``AgentSettings.tool_timeout_s``).
        tts: ``audio.tts.StreamingTTS`` for the speak node; None disables speech.
        artifacts: :class:`~omni_agent.agent.artifacts.ArtifactStore` the tools write to.
        gui: A :class:`~omni_agent.agent.gui.GuiEnv` to enable GUI mode (observe node).
        max_reply_tokens: Output budget of a chat run whose client set none (None: unbounded).
        max_reply_audio_s: Most seconds of speech per reply (None: unbounded).

    Returns:
        The compiled graph; invoke it with ``context=RunContext(...)`` and
        ``config={"configurable": {"thread_id": session_id}}``.
    """
    config = GraphConfig(max_steps, tool_timeout_s, max_reply_tokens, max_reply_audio_s)
    builder = AgentGraph(model, tools, config=config, tts=tts, artifacts=artifacts, gui=gui)
    return builder.compile(checkpointer)
