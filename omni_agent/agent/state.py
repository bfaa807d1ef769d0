"""The agent graph's state: a ``TypedDict`` whose list/dict channels carry reducers.

Everything here is checkpointed (SQLite), so it holds only JSON-friendly values: messages
(langchain-core messages, merged by id), media and artifact *references* (bytes live in the
:class:`~omni_agent.agent.artifacts.ArtifactStore`), the pending tool calls of this step, and for GUI
runs the latest observation and the trajectory.
"""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage, BaseMessage, BaseMessageChunk, RemoveMessage
from langgraph.graph import add_messages

Status = Literal["running", "answered", "waiting_client", "complete", "infeasible", "max_steps", "error"]


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer for id-keyed maps: later updates win per key; a ``None`` value deletes the key."""
    out = dict(left or {})
    for key, value in (right or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_ID = operator.attrgetter("id")


def append_messages(left: Any, right: Any) -> list[AnyMessage]:
    """LangGraph's ``add_messages`` with a fast path for the usual update: new messages appended.

    ``add_messages`` walks the whole history in Python on every update (naming id-less messages,
    indexing ids), and an update is applied twice per step (the step and the router's fresh read),
    so its cost grew with the conversation (0.9 ms of a turn after 100 turns). When both sides are
    lists of plain messages (no chunks, no ``RemoveMessage``), every one in ``left`` has an id
    (``right``'s id-less ones get one, as there), and no id of ``right`` repeats or is in ``left``, the result is ``left + right``, which is exactly
    what ``add_messages`` returns then; the checks run in C. Anything else goes to ``add_messages``.
    """
    if isinstance(left, list) and isinstance(right, list) and right:
        types = set(map(type, left))
        types.update(map(type, right))
        if all(issubclass(t, BaseMessage) and not issubclass(t, (BaseMessageChunk, RemoveMessage)) for t in types):
            for m in right:  # named in place, as add_messages does
                if m.id is None:
                    m.id = str(uuid.uuid4())
            new = set(map(_ID, right))
            if len(new) == len(right):
                old = set(map(_ID, left))
                if None not in old and old.isdisjoint(new):
                    return left + right
    return add_messages(left, right)


class ToolCallDict(TypedDict, total=False):
    """One call the model asked for (OpenAI / langchain shape) and why it needs approval, if it does."""

    id: str
    name: str
    args: dict[str, Any]
    approval: str | None


class AgentState(TypedDict, total=False):
    """State of one session (a LangGraph thread keyed by the session id)."""

    messages: Annotated[list[AnyMessage], append_messages]
    """The conversation; items keep their realtime item id as message id, so re-sent items merge."""
    media: Annotated[dict[str, dict[str, Any]], merge_dicts]
    """Input media by id (``{"kind": "image", "artifact_id": ..., "mime": ...}``); bytes in the store."""
    pending: list[ToolCallDict]
    """Tool calls of the current step still to run (the guard drops the denied ones)."""
    artifacts: Annotated[list[dict[str, Any]], operator.add]
    """Artifacts the tools produced (``{"id", "mime", "tool", "call_id", "url"}``), in order."""
    steps: int
    """Tool rounds taken in the current turn (reset to 0 by every new input)."""
    mode: Literal["chat", "gui"]
    """``gui`` runs observe -> think -> act until ``status`` ends the task."""
    goal: str
    """The GUI task's goal (GUI mode only)."""
    observation: dict[str, Any] | None
    """The latest screen: ``{"step", "elements": str, "screenshot": artifact id | None, "size": [w, h]}``."""
    trajectory: Annotated[list[dict[str, Any]], operator.add]
    """One entry per GUI step: observation summary, action, result."""
    status: Status
    """Where the current turn ended; ``running`` while inside it."""
    items: Annotated[dict[str, str], merge_dicts]
    """Realtime conversation item id -> message id (or ``call:<id>`` / ``reply``) already merged."""
