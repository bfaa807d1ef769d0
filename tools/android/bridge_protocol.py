"""Messages of the websocket device bridge (one pydantic model per kind; transport lives elsewhere).

A phone-side agent connects to ``ws://HOST:PORT/device`` and speaks JSON text frames:

1. bridge -> agent ``{"type": "challenge", "nonce": "<32 hex>", "protocol": 2}``: a fresh nonce for
   this connection only.
2. agent -> bridge ``{"type": "hello", "device_id": "pixel-7", "nonce": "<the nonce>",
   "proof": "<hex HMAC-SHA256(token, 'omni-bridge-hello|' + nonce + '|' + device_id)>", "screen": [1080, 2400]}``.
   The token never crosses the wire, and a captured hello is worthless on any other connection:
   its nonce is not that connection's.
3. bridge -> agent ``{"type": "welcome", "device_id": "pixel-7", "protocol": 2}`` or an ``error``
   frame followed by close code 4401 (bad proof, or a replayed hello) / 4400 (bad hello) / 4429
   (too many failed attempts from this address; retry later).
4. bridge -> agent JSON-RPC 2.0 requests ``{"jsonrpc": "2.0", "id": 7, "method": "tap", "params": {...}}``;
   agent -> bridge responses ``{"jsonrpc": "2.0", "id": 7, "result": {...}}`` or
   ``{"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "..."}}``. A frame the bridge
   cannot read is answered with an ``error`` frame; the connection stays up.
5. ``screenshot`` answers ``{"result": {"binary": true, "format": "png", "size": N}}`` and then one
   binary frame: a 4-byte big-endian request id followed by the PNG bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 2  # 2: challenge-response hello (1 sent the token in clear and could be replayed)
CLOSE_BAD_TOKEN = 4401  # 4000-4999: application close codes (RFC 6455); 401 mirrors HTTP Unauthorized
CLOSE_BAD_HELLO = 4400
CLOSE_REPLACED = 4409  # the same device_id connected again; the old socket is closed
CLOSE_THROTTLED = 4429  # too many failed hellos from this address (429 mirrors HTTP Too Many Requests)
PROOF_CONTEXT = b"omni-bridge-hello|"  # domain separation: this HMAC proves a hello, nothing else
ERR_METHOD_NOT_FOUND = -32601  # JSON-RPC 2.0 reserved codes
ERR_INVALID_PARAMS = -32602
ERR_INTERNAL = -32603
BINARY_ID = struct.Struct(">I")

Method = Literal["tap", "swipe", "key", "input", "screenshot", "state", "packages", "launch"]


class Challenge(BaseModel):
    type: Literal["challenge"] = "challenge"
    nonce: str
    protocol: int = PROTOCOL_VERSION


class Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["hello"] = "hello"
    device_id: str = Field(min_length=1, max_length=128)
    nonce: str = Field("", max_length=128)
    """The nonce of this connection's challenge."""
    proof: str = Field("", max_length=128)
    """:func:`hello_proof` of the shared token for this nonce and device id."""
    token: str | None = None
    """Protocol 1's token in clear: refused (it could be captured and replayed)."""
    name: str = ""
    screen: tuple[int, int] | None = None
    """Physical screen size (w, h) in pixels."""


def hello_proof(token: str, nonce: str, device_id: str) -> str:
    """HMAC-SHA256 of the shared token over this connection's nonce and the device id, in hex."""
    msg = PROOF_CONTEXT + nonce.encode() + b"|" + device_id.encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def answer_challenge(challenge: str | bytes, token: str, device_id: str, **fields: Any) -> Hello:
    """The hello that answers a challenge frame (what a phone-side agent sends)."""
    nonce = Challenge.model_validate_json(challenge).nonce
    return Hello(device_id=device_id, nonce=nonce, proof=hello_proof(token, nonce, device_id), **fields)


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
