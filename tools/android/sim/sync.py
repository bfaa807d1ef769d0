"""The ``sync:`` service (``adb pull``/``push``, adbutils' ``sync``) over the simulator's file store.

Requests are an id and a little-endian length, ``STAT|LIST|RECV|SEND <len> <path>``, or ``QUIT``.
Answers: ``STAT mode size mtime``; ``DENT mode size mtime namelen name`` ... ``DONE``; ``DATA len
bytes`` ... ``DONE``; for ``SEND path,mode`` the host streams ``DATA`` packets and ``DONE mtime`` and
gets ``OKAY``. Errors are ``FAIL len message``.
"""

from __future__ import annotations

import stat
import struct
import time
from typing import Protocol

CHUNK = 64 * 1024  # SYNC_DATA_MAX: a DATA packet carries at most 64 KiB
DIRS = ("/", "/sdcard", "/data", "/data/local", "/data/local/tmp", "/storage/emulated/0")
U32 = struct.Struct("<I")


class _Stream(Protocol):
    def read(self, n: int) -> bytes: ...

    def write(self, payload: bytes) -> bool: ...


def _fail(message: str) -> bytes:
    data = message.encode()
    return b"FAIL" + U32.pack(len(data)) + data


def serve_sync(stream: _Stream, files: dict[str, bytes]) -> None:
    """Answer sync requests until ``QUIT`` or the host closes the stream."""
    while True:
        head = stream.read(8)
        cmd, length = head[:4], U32.unpack(head[4:])[0]
        if cmd == b"QUIT":
            return
        path = stream.read(length).decode("utf-8", errors="replace")
        now = int(time.time())
        if cmd == b"STAT":
            clean = path.rstrip("/") or "/"
            if clean in files:
                out = struct.pack("<III", stat.S_IFREG | 0o644, len(files[clean]), now)
            elif clean in DIRS:
                out = struct.pack("<III", stat.S_IFDIR | 0o771, 4096, now)
            else:
                out = struct.pack("<III", 0, 0, 0)
            stream.write(b"STAT" + out)
        elif cmd == b"LIST":
            prefix = path.rstrip("/") + "/"
            out = b""
            for name, data in sorted(files.items()):
                if name.startswith(prefix) and "/" not in name[len(prefix):]:
                    base = name[len(prefix):].encode()
                    out += b"DENT" + struct.pack("<IIII", stat.S_IFREG | 0o644, len(data), now, len(base)) + base
            stream.write(out + b"DONE" + bytes(16))
        elif cmd == b"RECV":
            if path not in files:
                stream.write(_fail(f"remote object '{path}' does not exist"))
                continue
            data = files[path]
            out = b"".join(b"DATA" + U32.pack(len(data[i:i + CHUNK])) + data[i:i + CHUNK]
                           for i in range(0, len(data), CHUNK))
            stream.write(out + b"DONE" + U32.pack(0))
        elif cmd == b"SEND":
            target = path.rsplit(",", 1)[0]
            buf = bytearray()
            while True:
                kind, size = stream.read(4), U32.unpack(stream.read(4))[0]
                if kind == b"DONE":
                    break
                if kind != b"DATA":
                    stream.write(_fail(f"unexpected {kind!r} in SEND"))
                    return
                buf += stream.read(size)
            files[target] = bytes(buf)
            stream.write(b"OKAY" + U32.pack(0))
        else:
            stream.write(_fail(f"unknown sync request {cmd!r}"))
            return
