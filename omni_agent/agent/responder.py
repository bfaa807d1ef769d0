"""``AgentResponder``: every realtime and HTTP response produced by the agent graph.

It implements the realtime ``Responder`` protocol (``respond(conversation, options, cancel)``):

1. the session id (LangGraph ``thread_id``) comes from ``options.metadata["session_id"]`` (else the
   first item's id, else a fresh id for a stateless HTTP request);
2. conversation items the graph has not seen become messages (user audio and images go to the
   artifact store and are referenced by id); the graph's own earlier outputs, echoed back by the
   session as items, are recognised (function calls by ``call_id``, text by content) and only
   linked; a truncated assistant item (barge-in) shortens the stored answer;
3. a ``function_call_output`` whose ``call_id`` is a pending confirmation is the user's yes/no
   (``"yes"``/``"no"`` or ``{"approved": bool}``) and resumes the paused run; any other new input
   while a confirmation is pending denies it ("the user moved on") and carries on;
4. the graph's stream becomes response frames: ``TextDelta``/``AudioDelta`` (think, speak),
   ``FunctionCallDelta``/``FunctionCallDone`` for the client's own tools (declared in
   ``session.update``; the turn then ends and the client answers with ``function_call_output``),
   ``ToolProgress`` for server-side tools (diffusion steps, GUI actions), ``Artifact`` (URL
   ``/v1/artifacts/{id}``), ``ConfirmationRequest``, and a last ``ResponseFinished``.

The sessions database is opened by :meth:`AgentResponder.start` (the server's start-up, before the
first request is accepted); :meth:`health` reports it. A store that failed to open is retried by the
next response (see :class:`~omni_agent.agent.persistence.SessionStore`) and every response meanwhile fails at once with a
``SessionStoreError`` reason (HTTP 503). A database that turns out corrupt while serving is closed
(and moved aside, see :mod:`omni_agent.agent.persistence`) and a fresh one is opened on the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage

from omni_agent.agent.artifacts import ArtifactStore
from omni_agent.agent.graph import RunContext, build_graph
from omni_agent.agent.media import remember_clip, store_audio, user_parts
from omni_agent.agent.persistence import SessionStore, SessionStoreError, describe
from omni_agent.agent.runner import AgentRunner
from omni_agent.agent.tools import Tool, client_tools
from omni_agent.realtime.responder import (
    Artifact,
    AudioDelta,
    ConfirmationRequest,
    Conversation,
    FunctionCallDelta,
    FunctionCallDone,
    ResponseEvent,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    ToolProgress,
    Usage,
)

if TYPE_CHECKING:
    from omni_agent.agent.image_tools import ImageTools

_YES = {"yes", "y", "ok", "okay", "approve", "approved", "confirm", "confirmed", "true", "allow", "go ahead"}
MOVED_ON = "the user said something else instead of answering"


def parse_approval(output: str) -> bool:
    """A confirmation reply: ``{"approved": true}`` / ``{"confirmed": true}`` or a yes-like word."""
    text = (output or "").strip()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        data = text
    if isinstance(data, dict):
        return bool(data.get("approved", data.get("confirmed", data.get("approve", False))))
    if isinstance(data, bool):
        return data
    return str(data).strip().strip(".!").lower() in _YES


def session_id_of(conversation: Conversation, options: ResponseOptions) -> tuple[str, bool]:
    """(thread id, persistent?) for a response."""
    sid = getattr(options, "session_id", None) or (options.metadata or {}).get("session_id")
    if sid:
        return str(sid), True
    if conversation.items:
        return "conv_" + str(conversation.items[0].get("id")), True
    return "http_" + uuid.uuid4().hex, False


def _item_text(item: dict[str, Any]) -> str:
    out = []
    for p in item.get("content") or []:
        if p.get("type") in ("input_text", "output_text", "text"):
            out.append(p.get("text") or "")
        elif p.get("type") in ("input_audio", "output_audio", "audio") and p.get("transcript"):
            out.append(p["transcript"])
    return "".join(out)


def _align(conversation: Conversation) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Pair each item with its chat message (for the audio samples that items leave out)."""
    msgs = list(conversation.messages)
    if any("item_id" in m for m in msgs):
        by_id = {m["item_id"]: m for m in msgs if "item_id" in m}
        return [(it, by_id.get(it.get("id"))) for it in conversation.items]
    j = 1 if msgs and msgs[0].get("role") == "system" and not (
        conversation.items and conversation.items[0].get("role") == "system") else 0
    out = []
    for it in conversation.items:
        role = {"function_call": "assistant", "function_call_output": "user"}.get(it.get("type"), it.get("role"))
        if j < len(msgs) and msgs[j].get("role") == role:
            out.append((it, msgs[j]))
            j += 1
        else:
            out.append((it, None))
    return out


class AgentResponder:
    """The agent graph behind the realtime ``Responder`` protocol.

    Args:
        runner: An :class:`AgentRunner` over a graph compiled with a checkpointer.
        artifacts: Where user media and tool outputs are stored (served by ``artifacts_router``).
        instructions: Default system instructions when the conversation has none.
    """

    def __init__(self, runner: AgentRunner, artifacts: ArtifactStore, *, instructions: str | None = None):
        self.runner = runner
        self.artifacts = artifacts
        self.instructions = instructions
        self.store: SessionStore | None = None  # None: the runner's graph came with its checkpointer
        # The agent's image tools (None: none); the images router serves with this same instance, so one
        # image decoder sits in memory for both.
        self.image_tools: ImageTools | None = None

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def build(cls, settings: Any, engine: Any, tts: Any = None, *, tools: list[Tool] | None = None,
              image_tools: bool = True, artifacts: ArtifactStore | None = None) -> AgentResponder:
        """The server's default responder, built synchronously (for ``build_app``).

        The SQLite checkpointer is opened by :meth:`start` (the server's start-up) or else by the first
        response, inside the serving event loop.

        Args:
            settings: The runtime ``Settings`` (``agent.max_steps``, ``agent.checkpoint_db``, ...).
            engine: The ``AsyncEngine``.
            tts: ``audio.tts.StreamingTTS`` for spoken answers (None: text only).
            tools: Extra server-side tools.
            image_tools: Add generate/edit/segment (the diffusion decoder is built on first use); the
                instance is kept as ``image_tools`` for the images router to share.
            artifacts: The artifact store (default: a folder next to the checkpoint database).
        """
        from omni_agent.agent.engine_model import EngineChatModel
        from omni_agent.agent.image_tools import ImageTools

        a = settings.agent
        db = Path(a.checkpoint_db)
        # an in-memory database keeps its artifacts in memory too (never a ":memory:-artifacts" folder)
        artifacts = artifacts or ArtifactStore(None if a.checkpoint_db == ":memory:" else
                                               db.parent / (db.stem + "-artifacts"))
        images = ImageTools.lazy(engine, artifacts, preset=settings.model.preset, path=settings.model.path,
                                 seed=settings.model.seed) if image_tools else None
        all_tools = list(tools or []) + (images.tools() if images is not None else [])
        model = EngineChatModel(engine, artifacts=artifacts, max_tokens=settings.engine.default_max_tokens)
        self = cls(None, artifacts)  # type: ignore[arg-type]
        self.engine = engine  # the realtime session reads its context length and tokenizer (truncation)
        self.image_tools = images

        def on_open(saver: Any) -> None:  # each (re)open of the database gets a graph on it
            graph = build_graph(model, all_tools, saver, max_steps=a.max_steps, tool_timeout_s=a.tool_timeout_s,
                                tts=tts, artifacts=artifacts, max_reply_tokens=a.max_reply_tokens,
                                max_reply_audio_s=a.max_reply_audio_s)
            self.runner = AgentRunner(graph, max_steps=a.max_steps)

        self.store = SessionStore(db, on_open)
        return self

    @classmethod
    async def from_settings(cls, settings: Any, engine: Any, tts: Any = None, **kwargs: Any) -> AgentResponder:
        """Like :meth:`build`, with the checkpoint database opened now (in the running loop)."""
        self = cls.build(settings, engine, tts, **kwargs)
        await self._ensure()
        return self

    async def start(self) -> None:
        """Open the sessions database now (server start-up). A failure is logged and shown by
        :meth:`health`, and retried by later responses; it does not stop the server."""
        if self.store is not None:
            with contextlib.suppress(SessionStoreError):
                await self.store.ensure(force=True)

    async def health(self) -> dict[str, Any]:
        """``{"ok", "path", "error"}`` of the sessions database."""
        if self.store is None:
            return {"ok": True, "path": None, "error": None}
        return await self.store.health()

    async def _ensure(self) -> None:
        if self.store is not None:
            await self.store.ensure()

    def _store_failed(self, error: BaseException) -> str:
        return self.store.failed(error) if self.store is not None else describe(error, "sessions database")

    async def aclose(self) -> None:
        """Close the checkpoint database (server shutdown)."""
        if self.store is not None:
            await self.store.close()

    # --- conversation -> new messages -----------------------------------------------------------

    def _user_message(self, item: dict[str, Any], msg: dict[str, Any] | None) -> HumanMessage | SystemMessage:
        iid = item.get("id")
        text = _item_text(item)
        if item.get("role") == "system":
            return SystemMessage(content=text, id=iid)
        parts = user_parts(self.artifacts, msg.get("content") if msg else None, text)
        if parts:
            return HumanMessage(content=parts, id=iid, additional_kwargs={"transcript": text} if text else {})
        return HumanMessage(content=text, id=iid)

    def _from_items(self, conversation: Conversation, values: dict[str, Any], pending_calls: set[str]
                    ) -> tuple[list[AnyMessage], dict[str, str], list[tuple[str, str]]]:
        msgs = values.get("messages", [])
        known = {m.id for m in msgs} | set(values.get("items", {}))
        linked = set(values.get("items", {}).values())
        calls = {c["id"] for m in msgs if isinstance(m, AIMessage) for c in m.tool_calls}
        answered = {m.tool_call_id for m in msgs if isinstance(m, ToolMessage)}
        ours = [m for m in msgs if isinstance(m, AIMessage) and not m.tool_calls and isinstance(m.content, str)
                and m.content and m.id not in linked]
        new: list[AnyMessage] = []
        links: dict[str, str] = {}
        replies: list[tuple[str, str]] = []
        for item, msg in _align(conversation):
            iid, kind = item.get("id"), item.get("type")
            if iid in known:
                continue
            if kind == "function_call":
                cid = item.get("call_id")
                if cid in calls:
                    links[iid] = f"call:{cid}"
                    continue
                try:
                    args = json.loads(item.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = {"_raw": item.get("arguments")}
                new.append(AIMessage(content="", id=iid, tool_calls=[{"id": cid, "name": item.get("name"),
                                                                       "args": args}]))
            elif kind == "function_call_output":
                cid = item.get("call_id")
                if cid in pending_calls:
                    replies.append((cid, item.get("output") or ""))
                    links[iid] = "reply"
                elif cid in answered:
                    links[iid] = f"call:{cid}"
                else:
                    new.append(ToolMessage(content=item.get("output") or "", tool_call_id=cid, id=iid))
            elif item.get("role") == "assistant":
                text = _item_text(item)
                match = next((m for m in ours if m.content == text or (text and m.content.startswith(text))), None)
                if match is not None:
                    ours.remove(match)
                    links[iid] = match.id
                    if text != match.content:  # barge-in: keep only what the user heard
                        new.append(AIMessage(content=text, id=match.id))
                    continue
                new.append(AIMessage(content=text, id=iid))
            else:
                new.append(self._user_message(item, msg))
        return new, links, replies

    def _from_chat(self, conversation: Conversation, persistent: bool, values: dict[str, Any]) -> list[AnyMessage]:
        """HTTP chat: the request carries the history; a known session only adds what follows our last answer."""
        msgs = list(conversation.messages)
        if persistent and values.get("messages"):
            last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=-1)
            msgs = msgs[last + 1:]
        out: list[AnyMessage] = []
        for m in msgs:
            item = {"role": m.get("role"), "content": []}
            content = m.get("content")
            if isinstance(content, str):
                item["content"] = [{"type": "input_text", "text": content}]
            else:
                item["content"] = [{"type": "input_text", "text": p.get("text", "")} for p in content or []
                                   if p.get("type") == "text"]
            if m.get("role") == "assistant":
                out.append(AIMessage(content=_item_text(item)))
            elif m.get("role") == "tool":
                out.append(ToolMessage(content=str(content), tool_call_id=m.get("tool_call_id", "")))
            elif m.get("role") == "system":
                out.append(SystemMessage(content=_item_text(item)))
            else:
                out.append(self._chat_user(content))
        return out

    def _chat_user(self, content: Any) -> HumanMessage:
        """An HTTP user message (processor format) -> a message that keeps its media by reference.

        Unlike a realtime item (where the audio is the question and its transcript only a note) every
        part counts and keeps its place: the text next to a recording is asked, and a video first stays
        the prompt's shared prefix. Image ids stay out of the prompt (HTTP offers no image tools), so the
        same request gets the same prompt and reuses its cached prefix.
        """
        if not isinstance(content, list):
            return HumanMessage(content=content or "")
        parts: list[dict[str, Any]] = []
        for p in content:
            kind = p.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": p.get("text", "")})
            elif kind == "image" and p.get("image") is not None:
                parts.append({"type": "image", "artifact_id": self.artifacts.put_image(p["image"], kind="input").id})
            elif kind == "audio" and p.get("audio") is not None:
                parts.append({"type": "audio", "artifact_id": store_audio(self.artifacts, p["audio"])})
            elif kind == "video" and p.get("video") is not None:
                parts.append({"type": "video", "video_id": remember_clip(p["video"])})
        return HumanMessage(content=parts)

    # --- respond ------------------------------------------------------------------------------

    async def respond(self, conversation: Conversation, options: ResponseOptions, cancel: asyncio.Event, *,
                      sampling: dict[str, Any] | None = None, server_tools: bool = True
                      ) -> AsyncIterator[ResponseEvent]:
        """Run the graph for one response (see the module docstring).

        Args:
            conversation: The history (realtime items, or the HTTP request's messages).
            options: Modalities, tools, tool choice, temperature, token limit, ``session_id`` metadata.
            cancel: Set to stop the response.
            sampling: Extra engine ``SamplingParams`` fields for the answer (the HTTP route's ``seed``,
                ``top_p``, ``stop``, ...); not part of the realtime protocol.
            server_tools: Offer the server's own tools (image generation, GUI); the HTTP chat route
                offers only the tools the client declared.
        """
        t0 = time.perf_counter()
        try:
            await self._ensure()
        except SessionStoreError as e:  # fails fast while the store is down; the server lives on
            yield ResponseFinished("failed", f"SessionStoreError: {e}", Usage(), {})
            return
        sid, persistent = session_id_of(conversation, options)
        declared = client_tools(options.tools or [])
        ctx = RunContext(cancel=cancel, modalities=tuple(options.modalities), voice=options.voice,
                         tool_choice=options.tool_choice or "auto", client_tools=declared,
                         instructions=self._instructions(conversation), temperature=options.temperature,
                         max_output_tokens=options.max_output_tokens, sampling=sampling,
                         server_tools=server_tools, context_tokens=getattr(options, "context_tokens", None),
                         retention_ratio=getattr(options, "retention_ratio", None))
        try:
            values, pending = await self.runner.snapshot(sid) if persistent else ({}, [])
            pending_calls = {p["call_id"] for p in pending}
            if conversation.items:
                new, links, replies = self._from_items(conversation, values, pending_calls)
            else:
                new, links, replies = self._from_chat(conversation, persistent, values), {}, []
            # The instructions travel in the run context, not as messages.
            new = [m for m in new if not isinstance(m, SystemMessage)]
            if pending and replies:
                stream = self.runner.resolve(sid, parse_approval(replies[-1][1]), ctx,
                                             update={"messages": new, "items": links} if new or links else None)
            elif pending and new:
                stream = self.runner.resolve(sid, False, ctx, reason=MOVED_ON,
                                             update={"messages": new, "items": links})
            else:
                stream = self.runner.turn(sid, new, ctx, items=links)
        except sqlite3.Error as e:  # the store, not the conversation
            yield ResponseFinished("failed", f"SessionStoreError: {self._store_failed(e)}", Usage(), {})
            return
        except Exception as e:  # a bad conversation fails this response, not the session
            yield ResponseFinished("failed", f"{type(e).__name__}: {e}", Usage(), {})
            return
        async for ev in self._frames(stream, ctx, cancel, t0, options.latency, getattr(options, "usage", None)):
            yield ev

    def _instructions(self, conversation: Conversation) -> str | None:
        msgs = conversation.messages
        if msgs and msgs[0].get("role") == "system" and isinstance(msgs[0].get("content"), str):
            return msgs[0]["content"]
        return self.instructions

    async def _frames(self, stream: AsyncIterator[dict[str, Any]], ctx: RunContext, cancel: asyncio.Event,
                      t0: float, latency: dict[str, float], usage: Usage | None = None
                      ) -> AsyncIterator[ResponseEvent]:
        # ``latency`` is the caller's ResponseOptions.latency: filled as things happen, so the figures
        # survive a response whose task is cancelled before ResponseFinished (barge-in).
        client = {t.name for t in ctx.client_tools}
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for ev in stream:
                    await queue.put(ev)
            except sqlite3.Error as e:  # a checkpoint write failed: the store's error, said plainly
                await queue.put({"type": "error", "error": f"SessionStoreError: {self._store_failed(e)}"})
            except Exception as e:  # reported as a failed response
                await queue.put({"type": "error", "error": f"{type(e).__name__}: {e}"})
            finally:
                await queue.put(done)

        task = asyncio.create_task(pump())
        stop = asyncio.create_task(cancel.wait())
        finished: dict[str, Any] | None = None
        error: str | None = None
        usage = usage if usage is not None else Usage()  # the caller's: counted live, kept if cancelled
        finish_reason: str | None = None
        try:
            while True:
                get = asyncio.create_task(queue.get())
                await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():  # cancelled (barge-in, response.cancel): stop the graph now
                    get.cancel()
                    break
                ev = get.result()
                if ev is done:
                    break
                kind = ev["type"]
                if kind in ("text", "args") and "ttft_ms" not in latency:
                    latency["ttft_ms"] = (time.perf_counter() - t0) * 1000
                if kind == "text":
                    yield TextDelta(ev["delta"])
                elif kind == "audio":
                    latency.setdefault("first_audio_ms", (time.perf_counter() - t0) * 1000)
                    yield AudioDelta(ev["pcm"], ev.get("sample_rate", 24000), ev.get("text", ""))
                elif kind == "args" and ev["name"] in client:
                    yield FunctionCallDelta(ev["call_id"], ev["name"], ev["delta"])
                elif kind == "call_done":
                    if ev["name"] in client:
                        yield FunctionCallDone(ev["call_id"], ev["name"],
                                               json.dumps(ev["arguments"], ensure_ascii=False))
                    else:
                        yield ToolProgress(ev["call_id"], f"calling {ev['name']}", 0.0)
                elif kind == "progress":
                    yield ToolProgress(ev["call_id"], ev.get("message") or f"{ev['name']} running",
                                       ev.get("fraction"))
                elif kind == "tool_result":
                    status = "denied" if ev.get("denied") else "failed" if ev["is_error"] else "done"
                    yield ToolProgress(ev["call_id"], f"{ev['name']} {status}", 1.0)
                elif kind == "artifact":
                    yield Artifact(kind=ev.get("kind", "image"), mime_type=ev["mime"], uri=ev["url"],
                                   name=ev["id"], call_id=ev.get("call_id"))
                elif kind == "confirmation":
                    action = f"{ev['tool']}({json.dumps(ev['arguments'], ensure_ascii=False)})"
                    yield ConfirmationRequest(ev["call_id"], action, ev["reason"])
                elif kind == "usage":  # one per model call: the turn's usage is their sum
                    usage.input_tokens += int(ev.get("prompt_tokens") or 0)
                    usage.output_tokens += int(ev.get("completion_tokens") or 0)
                    usage.cached_tokens += int(ev.get("cached_tokens") or 0)
                    finish_reason = ev.get("finish_reason")
                elif kind == "finished":
                    finished = ev
                elif kind == "error":
                    error = ev["error"]
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        latency["total_ms"] = (time.perf_counter() - t0) * 1000
        if error is not None:
            yield ResponseFinished("failed", error, usage, latency)
        elif cancel.is_set() and finished is None:
            yield ResponseFinished("cancelled", "client_cancelled", usage, latency)
        elif finish_reason == "length" and finished is not None and finished.get("status") == "answered":
            yield ResponseFinished("incomplete", "max_output_tokens", usage, latency)  # the answer was cut
        else:
            yield ResponseFinished("completed", None, usage, latency)
