"""The engine-backed chat model: tool specs in the prompt, tool calls by constrained JSON decoding.

One think step is at most two engine requests that share the prompt prefix (so the second reuses
the first's KV cache):

1. **decide** (skipped when ``tool_choice`` names a tool, is ``none``, or there are no tools): the
   completion is constrained to ``{"tool": <one of the tool names | "answer">}``;
2. **arguments**, constrained to the chosen tool's JSON schema (its pydantic model's schema), streamed
   as function-call argument deltas; or **answer**, free text streamed as text deltas (and to the TTS).

Constrained decoding guarantees a parseable call that matches the schema even from a random-weight
``tiny`` thinker; the arguments are still validated again by the tool's pydantic model.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from langchain_core.messages import AIMessage, SystemMessage, ToolMessage

from omni_agent.agent.models import ModelRequest, ModelToolCall, ModelTurn

DEFAULT_SYSTEM = "You are a helpful assistant that can see, listen, speak, draw and operate an Android phone."
ANSWER = "answer"  # the decide step's choice for "no tool, reply in text"


def _tool_block(tools: list[dict[str, Any]]) -> str:
    lines = ["# Tools", "You may call one of these functions. Each line is a JSON function signature:",
             "<tools>"]
    lines += [json.dumps({"name": t["name"], "description": t.get("description", ""),
                          "parameters": t.get("parameters", {})}, ensure_ascii=False) for t in tools]
    lines += ["</tools>",
              'To act, first name the function as {"tool": "<name>"} (or {"tool": "answer"} to reply in text), '
              "then give its arguments as one JSON object."]
    return "\n".join(lines)


class EngineChatModel:
    """Chat model over :class:`omni_agent.engine.AsyncEngine`.

    Args:
        engine: A started (or startable) ``AsyncEngine``.
        artifacts: The artifact store, to load images/audio that messages and observations refer to.
        temperature: Sampling temperature for answers and arguments (0 = greedy).
        max_tokens: Longest text answer.
        max_arg_tokens: Longest tool-call argument JSON.
        seed: Per-request sampling seed (reproducible runs); None for fresh randomness.
        system_prompt: Default system message when the run gives no instructions.
    """

    def __init__(self, engine: Any, *, artifacts: Any = None, temperature: float = 0.0, max_tokens: int = 256,
                 max_arg_tokens: int = 192, seed: int | None = 0, system_prompt: str = DEFAULT_SYSTEM):
        self.engine = engine
        self.artifacts = artifacts
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_arg_tokens = max_arg_tokens
        self.seed = seed
        self.system_prompt = system_prompt

    @property
    def hidden_size(self) -> int | None:
        """Width of the thinker states this model can hand to the talker."""
        return getattr(getattr(self.engine, "thinker", None), "hidden_size", None)

    # --- prompt -------------------------------------------------------------------------------

    def _media(self, part: dict[str, Any], request: ModelRequest) -> dict[str, Any] | None:
        ref = part.get("artifact_id")
        if part.get("type") == "image":
            image = part.get("image") or request.images.get(ref)
            if image is None and ref and self.artifacts is not None:
                image = self.artifacts.load_image(ref)
            return {"type": "image", "image": image} if image is not None else None
        if part.get("type") == "audio":
            audio = part.get("audio")
            if audio is None and ref and self.artifacts is not None:
                from omni_agent.agent.media import load_audio

                audio = load_audio(self.artifacts, ref)
            return {"type": "audio", "audio": audio} if audio is not None else None
        if part.get("type") == "video":
            from omni_agent.agent.media import video_prompt_part

            return video_prompt_part(part)  # None once the clip is gone (evicted, restart)
        return None

    def _content(self, content: Any, request: ModelRequest) -> str | list[dict[str, Any]]:
        if isinstance(content, str):
            return content
        parts: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif (media := self._media(part, request)) is not None:
                parts.append(media)
        if all(p["type"] == "text" for p in parts):
            return "".join(p["text"] for p in parts)
        return parts

    def render(self, request: ModelRequest) -> list[dict[str, Any]]:
        """The conversation in the processor's chat format (tools in the system message)."""
        system = request.instructions or self.system_prompt
        if request.tools:
            system = system + "\n\n" + _tool_block(request.tools)
        out: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for m in request.messages:
            if isinstance(m, SystemMessage):
                out.append({"role": "system", "content": self._content(m.content, request)})
            elif isinstance(m, AIMessage):
                text = m.content if isinstance(m.content, str) else ""
                calls = "".join(f"<tool_call>{json.dumps({'name': c['name'], 'arguments': c['args']})}</tool_call>"
                                for c in m.tool_calls)
                out.append({"role": "assistant", "content": text + calls})
            elif isinstance(m, ToolMessage):
                out.append({"role": "user", "content": f"<tool_response>{m.content}</tool_response>"})
            else:
                out.append({"role": "user", "content": self._content(m.content, request)})
        if request.observation is not None:
            out.append({"role": "user", "content": self._observation(request)})
        return out

    def _observation(self, request: ModelRequest) -> str | list[dict[str, Any]]:
        obs = request.observation or {}
        text = (f"Screen {obs.get('size')} at step {obs.get('step')}. UI elements (index: description):\n"
                f"{obs.get('elements', '')}\nChoose the next action.")
        image = request.images.get(obs.get("screenshot") or "")
        return [{"type": "image", "image": image}, {"type": "text", "text": text}] if image is not None else text

    # --- decoding -----------------------------------------------------------------------------

    async def _complete(self, messages: list[dict[str, Any]], *, schema: dict[str, Any] | None, max_tokens: int,
                        on_delta: Any = None, temperature: float | None = None,
                        on_hidden: Any = None, sampling: dict[str, Any] | None = None,
                        cancel: Any = None) -> tuple[str, dict[str, Any]]:
        import asyncio

        from omni_agent.engine import GenerationRequest, SamplingParams

        # Tokenising (and encoding media) is CPU work: keep the event loop free.
        prompt = await asyncio.to_thread(self.engine.processor, messages, add_generation_prompt=True)
        params = SamplingParams(temperature=self.temperature if temperature is None else temperature,
                                max_tokens=max_tokens, seed=self.seed, json_schema=schema)
        for key, value in (sampling or {}).items():
            setattr(params, key, value)
        req = GenerationRequest(request_id="agent_" + uuid.uuid4().hex[:16], prompt=prompt, sampling=params,
                                return_hidden=on_hidden is not None)
        text: list[str] = []
        usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
        rid = req.request_id

        async def abort_on_cancel() -> None:
            await cancel.wait()  # the run was cancelled (barge-in, client gone): free the engine request now
            self.engine.abort(rid)

        # Do not rely on task cancellation reaching this coroutine through the graph's own tasks.
        watcher = asyncio.create_task(abort_on_cancel()) if cancel is not None else None
        try:
            async for out in self.engine.generate(req):
                if on_hidden is not None and out.hidden is not None:
                    on_hidden(out.hidden)  # before the text: the states belong to the sentence being written
                if out.text:
                    text.append(out.text)
                    if on_delta is not None:
                        on_delta(out.text)
                usage = {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                         "cached_tokens": out.cached_tokens, "finish_reason": out.finish_reason}
                if getattr(out, "error", None):  # a request that failed inside the engine
                    raise RuntimeError(out.error)
        finally:
            if watcher is not None:
                watcher.cancel()
        return "".join(text), usage

    async def agenerate(self, request: ModelRequest) -> ModelTurn:
        messages = self.render(request)
        names = [t["name"] for t in request.tools]
        choice = request.tool_choice
        usage: dict[str, Any] = {}
        if not names or choice == "none":
            name = None
        elif choice in names:
            name = choice
        else:
            options = names if choice == "required" else [*names, ANSWER]
            schema = {"type": "object", "properties": {"tool": {"enum": options}}, "required": ["tool"],
                      "additionalProperties": False}
            # max_output_tokens covers tool decisions and arguments too (OpenAI's definition)
            cap = 64 if request.max_tokens is None else min(64, request.max_tokens)
            raw, usage = await self._complete(messages, schema=schema, max_tokens=cap, cancel=request.cancel)
            if usage.get("finish_reason") == "length":  # the budget ran out before the decision
                return ModelTurn(text="", usage=_add_usage(usage), finish_reason="length")
            name = json.loads(raw)["tool"]
            name = None if name == ANSWER else name
        if name is None:
            text, u = await self._complete(messages, schema=None, max_tokens=request.max_tokens or self.max_tokens,
                                           on_delta=request.on_text, temperature=request.temperature,
                                           on_hidden=request.on_hidden, sampling=request.sampling,
                                           cancel=request.cancel)
            return ModelTurn(text=text.strip() or text, usage=_add_usage(usage, u),
                             finish_reason=u.get("finish_reason"))
        spec = next(t for t in request.tools if t["name"] == name)
        call_id = "call_" + uuid.uuid4().hex[:20]
        hint = {"role": "user", "content": f"Call {name}. Reply with its arguments as one JSON object."}
        cap = self.max_arg_tokens
        if request.max_tokens is not None:
            cap = min(cap, request.max_tokens - int(usage.get("completion_tokens") or 0))
            if cap <= 0:
                return ModelTurn(text="", usage=_add_usage(usage), finish_reason="length")
        raw, u = await self._complete(messages + [hint], schema=spec.get("parameters") or {"type": "object"},
                                      max_tokens=cap,
                                      on_delta=lambda d: request.on_args(call_id, name, d), cancel=request.cancel)
        if u.get("finish_reason") == "length":  # arguments cut by the budget: no call, an incomplete turn
            return ModelTurn(text="", usage=_add_usage(usage, u), finish_reason="length")
        return ModelTurn(tool_calls=[ModelToolCall(name, json.loads(raw), id=call_id)], usage=_add_usage(usage, u))


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def _add_usage(*parts: dict[str, Any]) -> dict[str, int]:
    """Token counts summed over a step's engine requests (decide + arguments/answer)."""
    return {k: sum(int(p.get(k) or 0) for p in parts) for k in USAGE_KEYS}


