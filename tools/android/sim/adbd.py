"""A device-side ADB daemon speaking the adb wire protocol over TCP (what ``adb connect`` talks to).

Messages are a 24-byte header ``command, arg0, arg1, data_length, data_crc32, magic`` (little-endian
uint32, ``magic = command ^ 0xffffffff``) followed by the payload (AOSP ``packages/modules/adb/protocol.txt``).

- ``CNXN(version, maxdata, "host::...")`` from the host is answered with our own ``CNXN`` and a
  ``device::`` banner; no ``AUTH`` (like an emulator or an ``adbd`` with auth disabled).
- ``OPEN(local, 0, "service\\0")`` -> ``OKAY(ours, local)``, then ``WRTE`` packets, each acknowledged
  by the host with ``OKAY`` before the next one is sent, then ``CLSE``. A refused service gets ``CLSE``.
- Services: ``shell:CMD`` (v1, raw output), ``shell,v2,...:CMD`` (framed stdout/stderr/exit code),
  ``exec:CMD``, ``sync:`` (file transfer, see ``sync.py``).
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable

from tools.android.sim.sync import serve_sync

log = logging.getLogger(__name__)

A_SYNC, A_CNXN, A_OPEN, A_OKAY = 0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE, A_AUTH, A_STLS = 0x45534C43, 0x45545257, 0x48545541, 0x534C5453
A_VERSION = 0x01000001  # the version from which checksums are skipped (adb >= 1.0.39)
MAX_PAYLOAD = 256 * 1024  # what modern adbd offers; the host's own limit wins when smaller
ACK_TIMEOUT_S = 15.0  # the host acknowledges every WRTE; a silent host means a dead stream
HEADER = struct.Struct("<6I")
SHELL_V2_STDOUT, SHELL_V2_STDERR, SHELL_V2_EXIT = 1, 2, 3  # shell protocol v2 packet ids
BANNER = (b"device::ro.product.name=omni_sim;ro.product.model=OmniSim;ro.product.device=omni_sim;"
          b"features=shell_v2,cmd\x00")

ShellFn = Callable[[str], tuple[bytes, int]]


def pack(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF) + data


class _Stream:
    """One open service: acknowledgements and data from the host arrive through queues."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.acks: queue.Queue[bool] = queue.Queue()
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.closed = threading.Event()
        self._buf = b""

    def write(self, payload: bytes) -> bool:
        """Send ``payload`` in WRTE packets, waiting for the host's OKAY after each; False if closed."""
        step = self.conn.max_payload
        for i in range(0, len(payload), step):
            if self.closed.is_set():
                return False
            self.conn.send(A_WRTE, self.local_id, self.remote_id, payload[i:i + step])
            if not self.acks.get(timeout=ACK_TIMEOUT_S):
                return False
        return True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes the host wrote (for ``sync:``); raises ConnectionError when closed."""
        while len(self._buf) < n:
            chunk = self.inbox.get(timeout=ACK_TIMEOUT_S)
            if chunk is None:
                raise ConnectionError("stream closed by the host")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _Connection:
    """One host connection: a reader loop plus one writer thread per open stream."""

    def __init__(self, sock: socket.socket, shell: ShellFn, files: dict[str, bytes] | None) -> None:
        self.sock, self.shell, self.files = sock, shell, files
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self.send_lock:
            self.sock.sendall(pack(command, arg0, arg1, data))

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("host closed the connection")
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _crc, magic = HEADER.unpack(self._read_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise ConnectionError(f"bad magic in message {command:#x}")
                data = self._read_exact(length) if length else b""
                self._dispatch(command, arg0, arg1, data)
        except (ConnectionError, OSError) as e:
            log.debug("adb connection ended: %s", e)
        finally:
            for s in list(self.streams.values()):
                s.closed.set()
                s.acks.put(False)
                s.inbox.put(None)
            self.sock.close()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = min(arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
            self.send(A_CNXN, A_VERSION, self.max_payload, BANNER)
        elif command == A_OPEN:
            service = data.rstrip(b"\x00").decode("utf-8", errors="replace")
            stream = _Stream(self, self.next_id, arg0)
            self.next_id += 1
            runner = self._service(service)
            if runner is None:
                self.send(A_CLSE, 0, arg0)
                return
            self.streams[stream.local_id] = stream
            self.send(A_OKAY, stream.local_id, arg0)
            threading.Thread(target=self._run_stream, args=(stream, runner), daemon=True,
                             name=f"adbd-{service[:20]}").start()
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.acks.put(True)
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.inbox.put(data)  # sync requests; shell stdin is read by nobody and just dropped
            self.send(A_OKAY, arg1, arg0)
        elif command == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                stream.closed.set()
                stream.acks.put(False)
                stream.inbox.put(None)
        elif command in (A_AUTH, A_STLS, A_SYNC):
            log.debug("ignoring adb message %#x", command)

    def _service(self, service: str) -> Callable[[_Stream], None] | None:
        if service.startswith(("shell,", "shell:", "exec:")):
            head, _, cmd = service.partition(":")
            v2 = "v2" in head.split(",")
            if not cmd.strip():
                return lambda st: st.write(self._frame(b"interactive shells are not supported by the simulator\n", 1, v2))
            return lambda st: st.write(self._frame(*self.shell(cmd), v2))
        if service.startswith("sync:") and self.files is not None:
            files = self.files
            return lambda st: serve_sync(st, files)
        return None

    @staticmethod
    def _frame(out: bytes, rc: int, v2: bool) -> bytes:
        if not v2:
            return out
        return (struct.pack("<BI", SHELL_V2_STDOUT, len(out)) + out
                + struct.pack("<BI", SHELL_V2_EXIT, 1) + bytes([rc & 0xFF]))

    def _run_stream(self, stream: _Stream, runner: Callable[[_Stream], object]) -> None:
        try:
            runner(stream)
            if not stream.closed.is_set():
                self.send(A_CLSE, stream.local_id, stream.remote_id)
        except (OSError, queue.Empty, ConnectionError, ValueError) as e:
            log.debug("stream %d ended: %s", stream.local_id, e)
        finally:
            self.streams.pop(stream.local_id, None)


class AdbDaemon:
    """Listens on 127.0.0.1 and serves adb connections with ``shell``.

    Args:
        shell: runs one command line, returns (output, exit status).
        files: the device's files, for the ``sync:`` service (``adb pull``/``push``); None disables it.
        port: TCP port; 0 picks a free one (read it back from ``.port``).
    """

    def __init__(self, shell: ShellFn, port: int = 0, host: str = "127.0.0.1",
                 files: dict[str, bytes] | None = None) -> None:
        self.shell, self.files = shell, files
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]
        self._thread: threading.Thread | None = None
        self._conns: list[socket.socket] = []

    def start(self) -> AdbDaemon:
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="adbd-accept")
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            threading.Thread(target=_Connection(conn, self.shell, self.files).serve, daemon=True, name="adbd-conn").start()

    def stop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
