"""Bad inputs for a live server and how to judge the answers (``bench reliability``, the fault suite).

A :class:`Probe` sends one bad request and says which statuses count as a clear refusal. An answer
is *clear* when its status is one of those and its body is an OpenAI error object
(``{"error": {"message", "type", "code"}}``); a 5xx, a dropped connection or a non-JSON body is a
*crash*; no answer within the timeout is a *hang*. :func:`fuzz_probes` mutates a valid chat body at
random (a seeded, bounded loop); :func:`bridge_probes` attacks the Android device bridge.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

CLEAR, UNCLEAR, CRASH, HANG = "clear", "unclear", "crash", "hang"


@dataclass
class Probe:
    """One bad input: ``send(client)`` returns ``(status, body bytes)``; ``ok`` are the clear statuses."""

    name: str
    send: Callable[[httpx.Client], tuple[int, bytes]]
    ok: tuple[int, ...] = (400,)


def _answer(probe: Probe, client: httpx.Client) -> tuple[int, bytes] | str:
    """``(status, body)``, or ``hang`` / ``crash`` when no answer came."""
    try:
        return probe.send(client)
    except httpx.TimeoutException:
        return HANG
    except (httpx.TransportError, OSError):
        return CRASH


def judge(probe: Probe, client: httpx.Client) -> str:
    """Run ``probe`` and classify the answer: ``clear``, ``unclear``, ``crash`` or ``hang``."""
    answer = _answer(probe, client)
    return answer if isinstance(answer, str) else _classify(probe, *answer)


def _classify(probe: Probe, status: int, body: bytes) -> str:
    if status >= 500:
        return CRASH
    try:
        err = json.loads(body)["error"]
        clear = bool(err["message"]) and bool(err["type"]) and "code" in err
    except (ValueError, KeyError, TypeError):
        clear = False
    return CLEAR if clear and status in probe.ok else UNCLEAR


def _post(path: str, key: str | None, **kw: Any) -> Callable[[httpx.Client], tuple[int, bytes]]:
    def send(client: httpx.Client) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = client.post(path, headers={**headers, **kw.pop("headers", {})}, **kw)
        return r.status_code, r.content

    return send


def _get(path: str, key: str | None) -> Callable[[httpx.Client], tuple[int, bytes]]:
    def send(client: httpx.Client) -> tuple[int, bytes]:
        r = client.get(path, headers={"Authorization": f"Bearer {key}"} if key else {})
        return r.status_code, r.content

    return send


def chat(text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 4, **kw}


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid 8x8 PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


def _image_chat(url: str) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is it?"}]}]}


def chunked_post(base_url: str, path: str, key: str, total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes with chunked transfer encoding (no Content-Length) over a raw socket."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):  # the server closes once it has refused: expected
            for _ in range(total // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        data = b""
        with contextlib.suppress(OSError):
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
                head, sep, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if sep and length is not None and len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise OSError("connection closed without an answer")
    return int(head.split()[1]), body


def http_probes(base_url: str, key: str, other: dict[str, str], body_limit: int) -> list[Probe]:
    """The catalogue of bad HTTP requests (issue 21 items 1, 4, 6, 7, 9).

    Args:
        base_url: ``http://127.0.0.1:PORT``.
        key: a valid key (the probes' own principal).
        other: ``{"artifact": id, "file": id}`` owned by another principal.
        body_limit: the server's ``max_request_bytes``.
    """
    c = "/v1/chat/completions"
    junk_png = "data:image/png;base64," + base64.b64encode(b"\x89PNG not really").decode()
    bomb = "data:image/png;base64," + base64.b64encode(bomb_png()).decode()
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a" * (body_limit * 4) + b'"}]}'
    return [
        Probe("invalid_json", _post(c, key, content=b"{nope", headers={"content-type": "application/json"})),
        Probe("body_not_object", _post(c, key, json=[1, 2])),
        Probe("no_messages", _post(c, key, json={"model": "tiny"})),
        Probe("unknown_role", _post(c, key, json={"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]})),
        Probe("temperature_string", _post(c, key, json=chat(temperature="hot"))),
        Probe("penalty_underflow", _post(c, key, json=chat(repetition_penalty=1e-300))),
        Probe("penalty_overflow", _post(c, key, json=chat(repetition_penalty=1e300))),
        Probe("top_p_nan", _post(c, key, content=json.dumps(chat(top_p=float("nan"))).encode(),
                                 headers={"content-type": "application/json"})),
        Probe("seed_2_80", _post(c, key, json=chat(seed=2**80))),
        Probe("max_tokens_negative", _post(c, key, json=chat(max_tokens=-1))),
        Probe("stop_token_negative", _post(c, key, json=chat(stop_token_ids=[-5]))),
        Probe("tool_choice_unknown", _post(c, key, json=chat(tool_choice={"type": "function",
                                                                          "function": {"name": "nope"}}))),
        Probe("body_over_limit", _post(c, key, content=big, headers={"content-type": "application/json"}), (413,)),
        Probe("chunked_over_limit", lambda _c: chunked_post(base_url, c, key, body_limit * 3), (413,)),
        Probe("text_over_context", _post(c, key, json=chat("word " * (body_limit // 6)))),
        Probe("image_bomb", _post(c, key, json=_image_chat(bomb))),
        Probe("image_junk", _post(c, key, json=_image_chat(junk_png))),
        Probe("image_remote_url", _post(c, key, json=_image_chat("http://example.com/cat.png"))),
        Probe("image_bad_base64", _post(c, key, json=_image_chat("data:image/png;base64,@@@"))),
        Probe("unknown_file_in_chat", _post(c, key, json={"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "video", "video": {"url": "file-000000000000000000000000"}}]}]}), (400, 404)),
        Probe("no_key", _get("/v1/models", None), (401, 429)),
        Probe("wrong_key", _get("/v1/models", "sk-wrong-guess"), (401, 429)),
        Probe("artifact_no_key", _get(f"/v1/artifacts/{other['artifact']}", None), (401, 429)),
        Probe("artifact_of_another", _get(f"/v1/artifacts/{other['artifact']}", key), (404,)),
        Probe("file_of_another", _get(f"/v1/files/{other['file']}/content", key), (404,)),
        Probe("file_path_escape", _get("/v1/files/..%2F..%2Fetc%2Fpasswd", key), (404,)),
        Probe("upload_empty", _post("/v1/files", key, files={"file": ("x.bin", b"")})),
    ]


_VALUES: list[Any] = [None, True, -1, 0, 2**70, -(2**70), 1e308, -1e-300, "", "x" * 5000, [], {}, [[[[]]]],
                      {"type": "nope"}, "\x00\ud7ff", 3.5]
_FIELDS = ["model", "messages", "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens",
           "repetition_penalty", "stop", "seed", "stream", "tools", "tool_choice", "response_format", "user",
           "stop_token_ids", "n", "stream_options"]


def fuzz_probes(count: int, key: str, seed: int = 0) -> list[Probe]:
    """``count`` random mutations of a valid chat body: one or two fields set to odd values.

    A mutation may happen to be valid; then a 200 is also a fine answer (``ok`` includes it) but the
    body must not be a 5xx or an unclear error.
    """
    rng = random.Random(seed)
    probes = []
    for i in range(count):
        body: dict[str, Any] = chat(f"fuzz {i}", max_tokens=2)
        for _ in range(rng.randint(1, 2)):
            body[rng.choice(_FIELDS)] = rng.choice(_VALUES)
        if rng.random() < 0.3:  # and sometimes the message itself
            body["messages"] = [{"role": rng.choice(["user", "tool", "system", 7]),
                                 "content": rng.choice(_VALUES)}]
        if body.get("stream") is True:
            body["stream"] = False  # a stream's status is decided before its body: judged the same way
        probes.append(Probe(f"fuzz_{i}", _post("/v1/chat/completions", key, json=body), (200, 400)))
    return probes


def judge_fuzz(probe: Probe, client: httpx.Client) -> str:
    """Like :func:`judge`, but a 200 with a completion body is also clear (the mutation was valid)."""
    answer = _answer(probe, client)
    if isinstance(answer, str):
        return answer
    status, body = answer
    if status == 200:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if json.loads(body)["choices"]:
                return CLEAR
        return UNCLEAR
    return _classify(probe, status, body)


def bridge_probes(url: str, token: str) -> list[tuple[str, Callable[[], str]]]:
    """Attacks on the device bridge; each returns ``clear`` when answered with an error frame/close code."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from tools.android.bridge_protocol import Hello, answer_challenge

    def refused(ws: Any, codes: tuple[int, ...]) -> str:
        try:
            first = json.loads(ws.recv(timeout=5))
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed:
            pass
        except TimeoutError:
            return HANG
        return CLEAR if first.get("type") == "error" and ws.close_code in codes else UNCLEAR

    def replay() -> str:
        with connect(url) as ws:
            captured = answer_challenge(ws.recv(timeout=5), token, "phone").model_dump_json()
        with connect(url) as ws:
            ws.recv(timeout=5)
            ws.send(captured)
            return refused(ws, (4401, 4429))

    def clear_token() -> str:
        with connect(url) as ws:
            ws.recv(timeout=5)
            ws.send(Hello(device_id="phone", token=token).model_dump_json())
            return refused(ws, (4400,))

    def junk_frame(frame: str | bytes) -> Callable[[], str]:
        def run() -> str:
            with connect(url) as ws:
                ws.send(answer_challenge(ws.recv(timeout=5), token, "prober").model_dump_json())
                ws.recv(timeout=5)  # welcome
                ws.send(frame)
                try:
                    reply = json.loads(ws.recv(timeout=5))
                except ConnectionClosed:
                    return CRASH  # dropped instead of answered
                except TimeoutError:
                    return HANG
                return CLEAR if reply.get("type") == "error" else UNCLEAR
        return run

    return [("bridge_replayed_hello", replay), ("bridge_token_in_clear", clear_token),
            ("bridge_short_binary", junk_frame(b"\x00\x01")), ("bridge_not_json", junk_frame("{oops")),
            ("bridge_deep_json", junk_frame("[" * 100_000)), ("bridge_no_id", junk_frame('{"jsonrpc": "2.0"}'))]
