"""Tools the agent can call: typed pydantic arguments that double as the JSON schema the model sees.

A :class:`Tool` is either *server-side* (it has ``fn``; the graph's tools node runs it) or
*client-side* (declared by a realtime client in ``session.update``; the graph stops the turn with the
call pending and the client answers with a ``function_call_output`` item). ``approval`` decides
whether a call needs the user's confirmation first (the guard node interrupts the graph).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass
class ArtifactRef:
    """An artifact a tool produced; the bytes are already in the artifact store."""

    id: str
    mime: str
    kind: str = "image"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolResult:
    """What a tool hands back: text (or JSON-able data) for the model, and any artifacts."""

    content: str | dict[str, Any] | list[Any]
    artifacts: list[ArtifactRef] = field(default_factory=list)
    is_error: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    """Extra structured facts for the graph (GUI tools set ``status`` here); not shown to the model."""

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else json.dumps(self.content, ensure_ascii=False)


@dataclass
class ToolContext:
    """What a running tool may use: progress reporting, cancellation, artifacts, the session's media."""

    call_id: str
    tool_name: str
    progress: Callable[[dict[str, Any]], None]
    """Report progress (``{"step": 3, "total": 20}``); becomes a ``ToolProgress`` event."""
    cancel: asyncio.Event
    artifacts: Any | None = None
    """The :class:`~omni_agent.agent.artifacts.ArtifactStore` (None when the graph has none)."""
    media: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """The session's media and artifacts by id (for tools that take an input image)."""


ToolFn = Callable[[Any, ToolContext], "ToolResult | str | Awaitable[ToolResult | str]"]
ApprovalFn = Callable[[Any], "str | None"]


@dataclass
class Tool:
    """One tool: name, description, argument schema, and how to run it.

    Args:
        name: Function name shown to the model.
        description: One or two sentences for the model.
        args_model: Pydantic model of the arguments; its JSON schema is what the model sees and
            what constrained decoding enforces. Client-side tools may give ``parameters`` instead.
        fn: ``fn(args, ctx)``, sync (run in a worker thread) or async. None for client-side tools.
        approval: ``True`` (always ask), ``False``, or ``fn(args) -> reason | None``.
        timeout_s: Per-call limit; None uses the agent setting ``tool_timeout_s``.
        parameters: Raw JSON schema (client-side tools declared in ``session.update``); with
            ``args_model`` it overrides the schema shown to the model (validation stays pydantic's).
    """

    name: str
    description: str
    args_model: type[BaseModel] | None = None
    fn: ToolFn | None = None
    approval: bool | ApprovalFn = False
    timeout_s: float | None = None
    parameters: dict[str, Any] | None = None

    @property
    def client_side(self) -> bool:
        return self.fn is None

    def json_schema(self) -> dict[str, Any]:
        if self.parameters is not None:
            return self.parameters
        if self.args_model is not None:
            return self.args_model.model_json_schema()
        return {"type": "object", "properties": {}}

    def spec(self) -> dict[str, Any]:
        """OpenAI function-tool shape (``{"type": "function", "name", "description", "parameters"}``)."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.json_schema()}

    def parse_args(self, raw: Mapping[str, Any]) -> Any:
        """Validate raw arguments; raises ``ValueError`` with a model-readable message."""
        if self.args_model is None:
            return dict(raw)
        try:
            return self.args_model.model_validate(dict(raw))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                                 for err in e.errors())
            raise ValueError(f"invalid arguments for {self.name}: {problems}") from None

    def approval_reason(self, args: Any) -> str | None:
        """Why this call needs the user's confirmation, or None."""
        if self.approval is True:
            return f"{self.name} needs your approval"
        if callable(self.approval):
            return self.approval(args)
        return None

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:
        assert self.fn is not None, "client-side tools run on the client"
        if inspect.iscoroutinefunction(self.fn):
            out = await self.fn(args, ctx)
        else:
            # Tools are CPU-heavy (diffusion, screenshots): keep the event loop free.
            out = await asyncio.to_thread(self.fn, args, ctx)
            if inspect.isawaitable(out):
                out = await out
        return out if isinstance(out, ToolResult) else ToolResult(content=str(out))


def client_tools(declared: Iterable[Mapping[str, Any]]) -> list[Tool]:
    """Client-side tools from a realtime ``session.update`` ``tools`` list (or chat-completions tools)."""
    out = []
    for t in declared:
        fn_spec = t.get("function", t)  # chat completions nest under "function"
        if t.get("type", "function") != "function" or not fn_spec.get("name"):
            continue
        out.append(Tool(name=fn_spec["name"], description=fn_spec.get("description", ""),
                        parameters=fn_spec.get("parameters") or {"type": "object", "properties": {}}))
    return out


def index_tools(tools: Iterable[Tool]) -> dict[str, Tool]:
    """Name -> tool; a later tool with the same name replaces an earlier one."""
    return {t.name: t for t in tools}
