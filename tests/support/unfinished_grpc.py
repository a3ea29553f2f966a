"""A hostile gRPC client: many calls on one HTTP/2 connection, each sending all of a large request
message but its last byte and then waiting, as a client that stalls (or means harm) does. No gRPC
library can send part of a message, so this speaks HTTP/2 itself: the preface, SETTINGS, HEADERS
in HPACK literals and DATA within the server's flow-control windows (RFC 9113, RFC 7541).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x3, 0x4, 0x5
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65_535


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _integer(value: int, prefix_bits: int) -> bytes:
    """An HPACK integer (RFC 7541, 5.1) with a zero first-byte pattern."""
    most = (1 << prefix_bits) - 1
    if value < most:
        return bytes([value])
    out, value = [most], value - most
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _literal(name: str, value: str) -> bytes:
    """A header as a literal without indexing, new name, no Huffman coding (RFC 7541, 6.2.2)."""
    return b"\x00" + _integer(len(name), 7) + name.encode() + _integer(len(value), 7) + value.encode()


@dataclass
class UnfinishedCalls:
    """`calls` calls of `method`, each declaring a message of `message_bytes` and sending all of it
    but the last byte. `sent` counts the message bytes the server's windows let through; `closed`
    the calls the server ended (refused, or timed out)."""

    address: tuple[str, int]
    method: str
    calls: int
    message_bytes: int
    sent: int = 0
    closed: set[int] = field(default_factory=set)
    refused_streams: int = 0
    _windows: dict[int, int] = field(default_factory=dict)
    _initial_window: int = DEFAULT_WINDOW
    _frame_size: int = 16_384
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _sock: socket.socket | None = None
    _goaway: bool = False
    _settled: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> UnfinishedCalls:
        self._sock = socket.create_connection(self.address)
        self._sock.sendall(PREFACE + _frame(SETTINGS, 0, 0))
        self._windows[0] = DEFAULT_WINDOW
        threading.Thread(target=self._read, daemon=True).start()
        # The server's SETTINGS (its stream limit and windows) hold from here on, as for any client.
        if not self._settled.wait(5):
            raise TimeoutError("the server sent no SETTINGS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()

    def send(self, settle_seconds: float = 3.0) -> None:
        """Opens every call and sends its bytes but the last, until every call has or the server
        takes no more for `settle_seconds` (its windows stay shut, or it ended the calls)."""
        assert self._sock is not None
        host = f"{self.address[0]}:{self.address[1]}"
        block = b"".join(
            _literal(name, value)
            for name, value in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", self.method),
                (":authority", host),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        streams = [1 + 2 * n for n in range(self.calls)]
        remaining = {}
        for stream in streams:
            with self._lock:
                self._windows[stream] = self._initial_window
            self._sock.sendall(_frame(HEADERS, END_HEADERS, stream, block))
            # the gRPC length prefix declares the whole message; all but its last byte follows
            remaining[stream] = struct.pack(">BI", 0, self.message_bytes) + bytes(self.message_bytes - 1)
        idle_since = time.monotonic()
        while remaining and time.monotonic() - idle_since < settle_seconds and not self._goaway:
            progressed = False
            for stream in list(remaining):
                with self._lock:
                    if stream in self.closed:
                        del remaining[stream]
                        continue
                    windows = (self._windows[0], self._windows[stream], self._frame_size)
                    size = min(*windows, len(remaining[stream]))
                    if size <= 0:
                        continue
                    self._windows[0] -= size
                    self._windows[stream] -= size
                chunk, remaining[stream] = remaining[stream][:size], remaining[stream][size:]
                try:
                    self._sock.sendall(_frame(DATA, 0, stream, chunk))
                except OSError:
                    return
                self.sent += size
                progressed = True
                if not remaining[stream]:
                    del remaining[stream]
            if progressed:
                idle_since = time.monotonic()
            else:
                with self._lock:
                    self._lock.wait(0.05)

    def wait_for_goaway(self, seconds: float) -> bool:
        """Whether the server closes the connection (GOAWAY, or the socket) within `seconds`."""
        with self._lock:
            return self._lock.wait_for(lambda: self._goaway, seconds)

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65_536)
            except OSError:
                return
            if not chunk:
                with self._lock:
                    self._goaway = True
                    self._lock.notify_all()
                return
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
                try:
                    self._on_frame(kind, flags, stream, payload)
                except OSError:  # closed by __exit__ while answering
                    return

    def _on_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        assert self._sock is not None
        with self._lock:
            if kind == SETTINGS and not flags & ACK:
                for at in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[at : at + 6])
                    if key == INITIAL_WINDOW_SIZE:
                        for open_stream in self._windows:
                            if open_stream:
                                self._windows[open_stream] += value - self._initial_window
                        self._initial_window = value
                    elif key == MAX_FRAME_SIZE:
                        self._frame_size = value
                self._sock.sendall(_frame(SETTINGS, ACK, 0))
                self._settled.set()
            elif kind == PING and not flags & ACK:
                self._sock.sendall(_frame(PING, ACK, 0, payload))
            elif kind == WINDOW_UPDATE:
                increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                self._windows[stream] = self._windows.get(stream, self._initial_window) + increment
            elif kind == RST_STREAM:
                self.closed.add(stream)
                if int.from_bytes(payload[:4], "big") == 0x7:  # REFUSED_STREAM
                    self.refused_streams += 1
            elif kind == HEADERS and flags & END_STREAM:
                self.closed.add(stream)
            elif kind == GOAWAY:
                self._goaway = True
            self._lock.notify_all()
