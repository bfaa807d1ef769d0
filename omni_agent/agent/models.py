"""Chat models the think node can call.

A chat model turns the conversation plus tool specs into one :class:`ModelTurn`: either answer text
(streamed through ``on_text``) or tool calls (arguments streamed through ``on_args``).
:class:`ScriptedChatModel` is the test kit's model: it plays a script of answers, tool calls and
policies (callables that read the request, e.g. the screen's elements in GUI mode).
The engine-backed model lives in :mod:`omni_agent.agent.engine_model`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from langchain_core.messages import AnyMessage

ToolChoice = Literal["auto", "none", "required"] | str
"""``auto``, ``none`` (answer only), ``required`` (some tool), or a tool name (that tool)."""


@dataclass
class ModelToolCall:
    """A tool call decoded from the model."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:20])


@dataclass
class ModelTurn:
    """What one model call produced."""

    text: str = ""
    tool_calls: list[ModelToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    """``prompt_tokens``, ``completion_tokens``, ``cached_tokens`` summed over the step's engine requests."""
    finish_reason: str | None = None
    """Why the answer ended (``stop``, ``length``); None for tool calls and models that do not say."""


def _noop_text(_: str) -> None:
    return None


def _noop_args(_call_id: str, _name: str, _delta: str) -> None:
    return None


@dataclass
class ModelRequest:
    """Everything the think node hands the model for one step."""

    messages: list[AnyMessage]
    tools: list[dict[str, Any]]
    """OpenAI function-tool specs (``name``, ``description``, ``parameters``)."""
    tool_choice: ToolChoice = "auto"
    observation: dict[str, Any] | None = None
    """GUI mode: the current screen (``elements`` text, ``screenshot`` artifact id, ``size``)."""
    images: dict[str, Any] = field(default_factory=dict)
    """Artifact id -> PIL image for media the prompt refers to (screenshots, input images)."""
    on_text: Callable[[str], None] = _noop_text
    on_args: Callable[[str, str, str], None] = _noop_args
    cancel: asyncio.Event | None = None
    instructions: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    on_hidden: Callable[[Any], None] | None = None
    """Set when the answer is spoken: receives the thinker's hidden states ``[t, D]`` of the answer
    tokens (they condition the talker). Models without hidden states ignore it."""
    sampling: dict[str, Any] | None = None
    """Extra ``SamplingParams`` fields for the answer (HTTP: ``seed``, ``top_p``, ``top_k``, ``stop``,
    ``stop_token_ids``, ``repetition_penalty``). Models without an engine ignore it."""


class ChatModel(Protocol):
    """Anything that can take one think step."""

    async def agenerate(self, request: ModelRequest) -> ModelTurn:
        """Run one step; stream text/arguments through the request's callbacks."""
        ...


ScriptStep = str | ModelToolCall | list[ModelToolCall] | ModelTurn | Callable[
    [ModelRequest], "ModelTurn | str | ModelToolCall | Awaitable[ModelTurn]"]


class ScriptedChatModel:
    """A chat model that plays a script (test kit; no weights).

    Each step of the script is an answer string, a tool call (or list of them), a :class:`ModelTurn`,
    or a policy ``fn(request) -> step`` that may read the request (messages, observation). Text is
    streamed word by word and arguments in small chunks, like a real model. When the script runs out
    the model answers ``fallback``. With ``tool_choice="none"`` a scripted tool call becomes the
    fallback answer (the graph forces an answer when the step limit is reached).

    Args:
        script: The steps, consumed one per call (``repeat_last`` keeps the last one forever).
        fallback: Answer when the script is exhausted or tools are disabled.
        repeat_last: Replay the last step instead of falling back (for runaway-loop tests).
    """

    def __init__(self, script: Sequence[ScriptStep], *, fallback: str = "Done.", repeat_last: bool = False):
        self.script = list(script)
        self.fallback = fallback
        self.repeat_last = repeat_last
        self.requests: list[ModelRequest] = []
        self._i = 0

    async def agenerate(self, request: ModelRequest) -> ModelTurn:
        self.requests.append(request)
        if self._i < len(self.script):
            step = self.script[self._i]
            self._i += 1
        elif self.repeat_last and self.script:
            step = self.script[-1]
        else:
            step = self.fallback
        if callable(step) and not isinstance(step, ModelToolCall | ModelTurn):
            step = step(request)
            if inspect.isawaitable(step):
                step = await step
        turn = self._as_turn(step)
        if turn.tool_calls and (request.tool_choice == "none" or not request.tools):
            turn = ModelTurn(text=self.fallback)
        for call in turn.tool_calls:
            call.id = "call_" + uuid.uuid4().hex[:20]  # fresh per use (scripts may repeat a step)
            raw = json.dumps(call.arguments)
            for i in range(0, len(raw), 16):
                request.on_args(call.id, call.name, raw[i:i + 16])
        if turn.text and not turn.tool_calls:
            words = turn.text.split(" ")
            for i, w in enumerate(words):
                request.on_text(w if i == 0 else " " + w)
        return turn

    @staticmethod
    def _as_turn(step: Any) -> ModelTurn:
        if isinstance(step, ModelTurn):
            return ModelTurn(step.text, [ModelToolCall(c.name, dict(c.arguments)) for c in step.tool_calls])
        if isinstance(step, ModelToolCall):
            return ModelTurn(tool_calls=[ModelToolCall(step.name, dict(step.arguments))])
        if isinstance(step, list):
            return ModelTurn(tool_calls=[ModelToolCall(c.name, dict(c.arguments)) for c in step])
        return ModelTurn(text=str(step))


def call(name: str, **arguments: Any) -> ModelToolCall:
    """Shorthand for scripts: ``call("generate_image", prompt="a red bicycle")``."""
    return ModelToolCall(name, arguments)
