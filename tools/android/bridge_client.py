"""The phone side of the websocket bridge, for the simulator (a reference for a real phone app).

Connects, answers the bridge's challenge with a ``hello`` that proves the token (never sent itself),
answers JSON-RPC requests, and reconnects with exponential backoff whenever the socket drops, until
:meth:`BridgeAgent.stop`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from tools.android.bridge_protocol import (
    CLOSE_BAD_TOKEN,
    CLOSE_THROTTLED,
    ERR_INTERNAL,
    ERR_INVALID_PARAMS,
    ERR_METHOD_NOT_FOUND,
    PARAMS,
    RpcErrorBody,
    RpcRequest,
    RpcResponse,
    Welcome,
    answer_challenge,
    pack_binary,
)

if TYPE_CHECKING:
    from tools.android.sim.device import SimulatedDevice

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.05  # reconnect quickly at first (a bridge restart), then back off
BACKOFF_MAX_S = 2.0


class BridgeAgent:
    """Runs a :class:`SimulatedDevice` as a bridged phone on a background thread."""

    def __init__(self, sim: SimulatedDevice, url: str, token: str, *, name: str = "omni-sim",
                 device_id: str | None = None) -> None:
        self.sim, self.url, self.token, self.name = sim, url, token, name
        self.device_id = device_id or name
        self._stop = threading.Event()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self.connections = 0
        """How many times the agent has connected (reconnects included)."""
        self.refused: str | None = None

    def start(self) -> BridgeAgent:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"bridge-agent-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._ws is not None:
            self._ws.close()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=5) as ws:
                    self._ws = ws
                    challenge = ws.recv(timeout=5)  # the bridge speaks first: a nonce for this connection
                    ws.send(answer_challenge(challenge, self.token, self.device_id, name=self.name,
                                             screen=self.sim.size).model_dump_json())
                    first = ws.recv(timeout=5)
                    if '"welcome"' not in str(first):
                        self.refused = str(first)
                        log.warning("bridge refused %s: %s", self.device_id, first)
                        return
                    Welcome.model_validate_json(first)
                    self.connections += 1
                    backoff = BACKOFF_START_S
                    for message in ws:
                        self._answer(ws, message)
            except ConnectionClosed as e:
                if e.rcvd is not None and e.rcvd.code in (CLOSE_BAD_TOKEN, CLOSE_THROTTLED):
                    self.refused = e.rcvd.reason
                    return
            except (OSError, TimeoutError, InvalidStatus, InvalidURI, ValidationError) as e:
                log.debug("bridge connect failed: %s", e)
            finally:
                self._ws = None
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _answer(self, ws: ClientConnection, message: str | bytes) -> None:
        if isinstance(message, str) and '"type":"error"' in message.replace(" ", ""):
            log.warning("bridge reported an error: %s", message[:300])  # about a frame we sent; not a call
            return
        try:
            req = RpcRequest.model_validate_json(message)
        except ValidationError as e:
            rid = _peek_id(message)
            code = ERR_METHOD_NOT_FOUND if "method" in str(e) else ERR_INVALID_PARAMS
            ws.send(RpcResponse(id=rid, error=RpcErrorBody(code=code, message=str(e)[:300])).model_dump_json())
            return
        try:
            result, binary = self._dispatch(req)
        except ValidationError as e:
            ws.send(RpcResponse(id=req.id, error=RpcErrorBody(code=ERR_INVALID_PARAMS, message=str(e)[:300]))
                    .model_dump_json())
            return
        except Exception as e:  # noqa: BLE001 - any failure on the phone becomes an error response
            ws.send(RpcResponse(id=req.id, error=RpcErrorBody(code=ERR_INTERNAL, message=repr(e)[:300]))
                    .model_dump_json())
            return
        ws.send(RpcResponse(id=req.id, result=result).model_dump_json())
        if binary is not None:
            ws.send(pack_binary(req.id, binary))

    def _dispatch(self, req: RpcRequest) -> tuple[dict[str, Any], bytes | None]:
        phone = self.sim.phone
        p = PARAMS[req.method].model_validate(req.params) if req.method in PARAMS else None
        match req.method:
            case "tap":
                phone.tap(p.x, p.y)
            case "swipe":
                phone.swipe(p.x1, p.y1, p.x2, p.y2, p.duration_ms)
            case "key":
                phone.key(p.code)
            case "input":
                if not phone.type_text(p.text):
                    raise RuntimeError("no text field has focus")
            case "launch":
                if not phone.launch(p.package):
                    raise RuntimeError(f"no launchable activity in {p.package}")
            case "screenshot":
                png = phone.screenshot()
                return {"binary": True, "format": "png", "size": len(png)}, png
            case "state":
                state: dict[str, Any] = {"screen": [phone.w, phone.h], "package": phone.package}
                if req.params.get("ui"):
                    state["ui_xml"] = phone.dump_xml()
                return state, None
            case "packages":
                return {"packages": phone.packages()}, None
        return {"ok": True}, None


def _peek_id(message: str | bytes) -> int:
    import json

    try:
        return int(json.loads(message).get("id", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
