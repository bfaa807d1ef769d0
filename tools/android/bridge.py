"""Websocket device bridge, server side: phones connect in, the runtime calls JSON-RPC methods on them.

The bridge owns one asyncio loop on a background thread so that synchronous agent code can use a
bridged phone like any other :class:`~tools.android.device.Device` (:class:`WsDevice`). Calls wait for
the device to be connected (a phone that drops and reconnects within the call's timeout is simply
used again); every call has a request id and a timeout.

Authentication is challenge-response (see :mod:`tools.android.bridge_protocol`): each connection gets
a fresh nonce, so a captured hello cannot be replayed to kick the phone off and take its calls. A
wrong answer is refused after ``FAILED_HELLO_DELAY_S`` and counted per address; past
``FREE_FAILURES`` in a minute that address is refused at once (4429) until the minute has passed.
A frame the bridge cannot read is answered with an ``error`` frame and the phone stays connected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from omni_agent.throttle import FailureThrottle
from tools.android.bridge_protocol import (
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_REPLACED,
    CLOSE_THROTTLED,
    Challenge,
    ErrorFrame,
    Hello,
    RpcRequest,
    RpcResponse,
    Welcome,
    hello_proof,
    unpack_binary,
)
from tools.android.device import BaseDevice, SecretStore

log = logging.getLogger(__name__)
_ws_log = logging.getLogger(__name__ + ".ws")
_ws_log.setLevel(logging.WARNING)  # websockets logs every open/close at INFO; the bridge logs devices itself

CALL_TIMEOUT_S = 10.0  # a phone answers a tap in milliseconds; ten seconds means it is gone
HELLO_TIMEOUT_S = 5.0  # a client that does not say hello quickly is not a device agent
MAX_FRAME = 16 * 1024 * 1024  # a 1440x3200 PNG screenshot stays well under this
FAILED_HELLO_DELAY_S = 0.5  # every wrong answer costs the guesser this long before the refusal


class BridgeError(RuntimeError):
    """A bridged call failed: timeout, disconnected device, or an error answered by the phone."""


@dataclass
class _Peer:
    hello: Hello
    ws: ServerConnection
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    binary_wait: dict[int, dict[str, Any]] = field(default_factory=dict)


class DeviceBridge:
    """The server phones connect to.

    Args:
        token: the shared secret every phone must present in its ``hello``.
        host, port: where to listen (port 0 picks a free one; read ``.port`` after ``start()``).
    """

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token, self.host, self._port = token, host, port
        self.loop = asyncio.new_event_loop()
        self.peers: dict[str, _Peer] = {}
        self._connected: dict[str, asyncio.Event] = {}
        self._next_id = 1
        self._thread: threading.Thread | None = None
        self._server = None
        self.port = 0
        self.throttle = FailureThrottle()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> DeviceBridge:
        ready = threading.Event()

        async def open_server() -> None:
            self._server = await serve(self._handle, self.host, self._port, max_size=MAX_FRAME, logger=_ws_log)

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(open_server())
            self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="device-bridge")
        self._thread.start()
        if not ready.wait(10):
            raise BridgeError("the device bridge did not start")
        return self

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/device"

    def stop(self) -> None:
        if self._server is None:
            return

        async def shutdown() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def devices(self) -> list[str]:
        return sorted(self.peers)

    def wait_for_device(self, device_id: str | None = None, timeout: float = CALL_TIMEOUT_S) -> str:
        """Block until ``device_id`` (or any device) is connected; returns its id."""
        async def wait() -> str:
            while True:
                if device_id is None and self.peers:
                    return next(iter(self.peers))
                if device_id is not None and device_id in self.peers:
                    return device_id
                await asyncio.sleep(0.02)

        try:
            return asyncio.run_coroutine_threadsafe(asyncio.wait_for(wait(), timeout), self.loop).result()
        except TimeoutError:
            raise BridgeError(f"no device {device_id or ''} connected within {timeout:.0f} s") from None

    # ----------------------------------------------------------------- connections
    async def _handle(self, ws: ServerConnection) -> None:
        hello = await self._authenticate(ws)
        if hello is None:
            return
        old = self.peers.get(hello.device_id)
        if old is not None:
            self._fail_pending(old, "device reconnected")
            await old.ws.close(CLOSE_REPLACED, "replaced by a new connection")
        peer = _Peer(hello, ws)
        self.peers[hello.device_id] = peer
        await ws.send(Welcome(device_id=hello.device_id).model_dump_json())
        log.info("device %s connected (%s)", hello.device_id, hello.name)
        try:
            async for message in ws:
                await self._on_message(peer, message)
        except ConnectionClosed:
            pass
        finally:
            if self.peers.get(hello.device_id) is peer:
                del self.peers[hello.device_id]
            self._fail_pending(peer, "device disconnected")
            log.info("device %s disconnected", hello.device_id)

    async def _authenticate(self, ws: ServerConnection) -> Hello | None:
        """Challenge, then check the hello's proof; None (after refusing) when it fails."""
        client = str((ws.remote_address or ("unknown",))[0])
        wait = self.throttle.retry_after(client)
        if wait > 0:
            await self._refuse(ws, CLOSE_THROTTLED, f"too many failed hellos; retry in {math.ceil(wait)} s")
            return None
        nonce = secrets.token_hex(16)
        try:
            await ws.send(Challenge(nonce=nonce).model_dump_json())
            raw = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_S)  # the agent answers the challenge
            hello = Hello.model_validate_json(raw)
        except (TimeoutError, ValidationError, ConnectionClosed, TypeError) as e:
            await self._refuse(ws, CLOSE_BAD_HELLO, f"expected a hello frame: {e}")
            return None
        if hello.token is not None:
            await self._refuse(ws, CLOSE_BAD_HELLO, "a hello with the token in clear (protocol 1) is not accepted; "
                                                    "answer the challenge with a proof (protocol 2)")
            return None
        expected = hello_proof(self.token, nonce, hello.device_id)
        why = None
        if not hmac.compare_digest(hello.nonce.encode(), nonce.encode()):
            why = "hello does not answer this connection's challenge (replayed?)"
        elif not hmac.compare_digest(hello.proof.encode(), expected.encode()):
            why = "bad token"
        if why is not None:
            self.throttle.failed(client)
            log.warning("device bridge: refused a hello for %r from %s: %s", hello.device_id, client, why)
            await asyncio.sleep(FAILED_HELLO_DELAY_S)
            await self._refuse(ws, CLOSE_BAD_TOKEN, why)
            return None
        return hello

    async def _refuse(self, ws: ServerConnection, code: int, message: str) -> None:
        try:
            await ws.send(ErrorFrame(message=message).model_dump_json())
            await ws.close(code, message[:120])
        except ConnectionClosed:
            pass

    def _fail_pending(self, peer: _Peer, why: str) -> None:
        for fut in peer.pending.values():
            if not fut.done():
                fut.set_exception(BridgeError(why))
        peer.pending.clear()

    async def _on_message(self, peer: _Peer, message: str | bytes) -> None:
        """Route an answer to its call; a frame that cannot be routed gets an ``error`` frame back."""
        problem = self._route(peer, message)
        if problem is not None:
            log.warning("device %s sent a bad frame: %s", peer.hello.device_id, problem)
            try:
                await peer.ws.send(ErrorFrame(message=problem[:300]).model_dump_json())
            except ConnectionClosed:
                pass

    def _route(self, peer: _Peer, message: str | bytes) -> str | None:
        if isinstance(message, bytes):
            try:
                request_id, payload = unpack_binary(message)
            except ValueError as e:
                return f"unreadable binary frame: {e}"
            result = peer.binary_wait.pop(request_id, None)
            fut = peer.pending.pop(request_id, None)
            if result is None:
                return f"binary frame for request {request_id}, which awaits no binary payload"
            if fut is not None and not fut.done():
                fut.set_result({**result, "data": payload})
            return None
        try:
            resp = RpcResponse.model_validate_json(message)
        except ValidationError as e:
            return f"unreadable frame: {e.errors()[0].get('msg', 'invalid')}"
        fut = peer.pending.get(resp.id)
        if fut is None or fut.done():
            return None  # a late answer to a call that timed out: nothing to do
        if resp.error is not None:
            peer.pending.pop(resp.id)
            fut.set_exception(BridgeError(f"device error {resp.error.code}: {resp.error.message}"))
        elif resp.result and resp.result.get("binary"):
            peer.binary_wait[resp.id] = resp.result  # the payload follows as one binary frame
        else:
            peer.pending.pop(resp.id)
            fut.set_result(resp.result or {})
        return None

    # ----------------------------------------------------------------- calls
    async def acall(self, device_id: str, method: str, params: dict | None = None,
                    timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Call ``method`` on a device; waits for it to (re)connect within ``timeout_s``.

        A request that could not be sent (the socket was closing) is sent again on the next
        connection; one that was sent is never repeated, since the phone may have acted on it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        req = RpcRequest(id=0, method=method, params=params or {})  # type: ignore[arg-type]
        while True:
            peer = self.peers.get(device_id)
            if peer is None or peer.ws.state is not State.OPEN:
                if loop.time() > deadline:
                    raise BridgeError(f"device {device_id!r} is not connected")
                await asyncio.sleep(0.02)  # poll: reconnects are rare and a 20 ms wait costs nothing
                continue
            req.id, self._next_id = self._next_id, self._next_id + 1
            fut: asyncio.Future = loop.create_future()
            peer.pending[req.id] = fut
            try:
                try:
                    await peer.ws.send(req.model_dump_json())
                except ConnectionClosed:
                    continue  # never reached the phone: safe to send again after the reconnect
                return await asyncio.wait_for(fut, max(0.01, deadline - loop.time()))
            except TimeoutError:
                raise BridgeError(f"{method} on {device_id} timed out after {timeout_s:.1f} s") from None
            finally:
                peer.pending.pop(req.id, None)
                peer.binary_wait.pop(req.id, None)

    def call(self, device_id: str, method: str, params: dict | None = None,
             timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Synchronous :meth:`acall` for code outside the bridge's loop."""
        fut = asyncio.run_coroutine_threadsafe(self.acall(device_id, method, params, timeout), self.loop)
        return fut.result(timeout + 1)

    async def call_async(self, device_id: str, method: str, params: dict | None = None,
                         timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """:meth:`acall` from another event loop (e.g. the HTTP server's): runs on the bridge's loop."""
        fut = asyncio.run_coroutine_threadsafe(self.acall(device_id, method, params, timeout_s), self.loop)
        return await asyncio.wrap_future(fut)  # the sockets belong to the bridge's loop, not the caller's

    def drop(self, device_id: str) -> None:
        """Close a device's socket (tests use it to exercise reconnects)."""
        async def close() -> None:
            peer = self.peers.get(device_id)
            if peer is not None:
                await peer.ws.close(1012, "bridge restart")  # 1012: service restart, the agent reconnects
                if self.peers.get(device_id) is peer:
                    del self.peers[device_id]

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)


class WsDevice(BaseDevice):
    """A phone reached through the websocket bridge."""

    def __init__(self, bridge: DeviceBridge, device_id: str, *, timeout: float = CALL_TIMEOUT_S,
                 apps: dict[str, str] | None = None, secrets: SecretStore | None = None) -> None:
        super().__init__(apps=apps, secrets=secrets)
        self.bridge, self.device_id, self.timeout = bridge, device_id, timeout

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.bridge.call(self.device_id, method, params, self.timeout)

    def _screen_size(self) -> tuple[int, int]:
        w, h = self._call("state")["screen"]
        return int(w), int(h)

    def screenshot(self) -> bytes:
        return self._call("screenshot")["data"]

    def ui_dump(self) -> str:
        return self._call("state", ui=True)["ui_xml"]

    def tap(self, x: int, y: int) -> None:
        self._call("tap", x=x, y=y)

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 300) -> None:
        self._call("swipe", x1=x1, y1=y1, x2=x2, y2=y2, duration_ms=ms)

    def key(self, code: int) -> None:
        self._call("key", code=code)

    def text(self, text: str) -> None:
        self._call("input", text=text)

    def launch(self, package: str) -> None:
        self._call("launch", package=package)

    def packages(self) -> list[str]:
        return list(self._call("packages")["packages"])
