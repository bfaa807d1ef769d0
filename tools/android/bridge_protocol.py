"""Messages of the websocket device bridge (one pydantic model per kind; transport lives elsewhere).

A phone-side agent connects to ``ws://HOST:PORT/device`` and speaks JSON text frames:

1. agent -> bridge ``{"type": "hello", "token": "...", "device_id": "pixel-7", "screen": [1080, 2400]}``
2. bridge -> agent ``{"type": "welcome", "device_id": "pixel-7", "protocol": 1}`` or an ``error``
   frame followed by close code 4401 (bad token) / 4400 (bad hello).
3. bridge -> agent JSON-RPC 2.0 requests ``{"jsonrpc": "2.0", "id": 7, "method": "tap", "params": {...}}``;
   agent -> bridge responses ``{"jsonrpc": "2.0", "id": 7, "result": {...}}`` or
   ``{"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "..."}}``.
4. ``screenshot`` answers ``{"result": {"binary": true, "format": "png", "size": N}}`` and then one
   binary frame: a 4-byte big-endian request id followed by the PNG bytes.
"""

from __future__ import annotations

import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
CLOSE_BAD_TOKEN = 4401  # 4000-4999: application close codes (RFC 6455); 401 mirrors HTTP Unauthorized
CLOSE_BAD_HELLO = 4400
CLOSE_REPLACED = 4409  # the same device_id connected again; the old socket is closed
ERR_METHOD_NOT_FOUND = -32601  # JSON-RPC 2.0 reserved codes
ERR_INVALID_PARAMS = -32602
ERR_INTERNAL = -32603
BINARY_ID = struct.Struct(">I")

Method = Literal["tap", "swipe", "key", "input", "screenshot", "state", "packages", "launch"]


class Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["hello"] = "hello"
    token: str
    device_id: str = Field(min_length=1, max_length=128)
    name: str = ""
    screen: tuple[int, int] | None = None
    """Physical screen size (w, h) in pixels."""


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"
    device_id: str
    protocol: int = PROTOCOL_VERSION


class ErrorFrame(BaseModel):
    type: Literal["error"] = "error"
    message: str


class RpcRequest(BaseModel):
    jsonrpc: Literal["2.0"] = "2.0"
    id: int
    method: Method
    params: dict[str, Any] = Field(default_factory=dict)


class RpcErrorBody(BaseModel):
    code: int
    message: str


class RpcResponse(BaseModel):
    jsonrpc: Literal["2.0"] = "2.0"
    id: int
    result: dict[str, Any] | None = None
    error: RpcErrorBody | None = None


# Typed params for each method (validated on the phone side before acting).
class TapParams(BaseModel):
    x: int
    y: int


class SwipeParams(BaseModel):
    x1: int
    y1: int
    x2: int
    y2: int
    duration_ms: int = Field(300, ge=0, le=10_000)


class KeyParams(BaseModel):
    code: int
    """Android KeyEvent code: HOME 3, BACK 4, ENTER 66, DEL 67."""


class InputParams(BaseModel):
    text: str
    """UTF-8 text for the focused field (the phone's IME types it; no ASCII limit)."""


class LaunchParams(BaseModel):
    package: str


PARAMS: dict[str, type[BaseModel]] = {"tap": TapParams, "swipe": SwipeParams, "key": KeyParams,
                                      "input": InputParams, "launch": LaunchParams}

AgentMessage = TypeAdapter(Hello | RpcResponse)


def pack_binary(request_id: int, payload: bytes) -> bytes:
    return BINARY_ID.pack(request_id) + payload


def unpack_binary(frame: bytes) -> tuple[int, bytes]:
    if len(frame) < BINARY_ID.size:
        raise ValueError("binary frame shorter than its 4-byte request id")
    return BINARY_ID.unpack_from(frame)[0], frame[BINARY_ID.size:]
