"""The control protocol between a probe (the controller) and `sockprobe serve` (the agent).

One TCP connection carries control only; every experiment opens data connections of its
own, so the probe's traffic is exactly what the probe says it is.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON holding one
object. Frames over MAX_FRAME are refused before they are read (a hostile header of
1 GiB costs nothing). The exchange, one request and one reply each:

    controller                               agent
    {"type": "hello", "version": 1,   ->
     "token": T}                        <-   {"type": "welcome", "version": 1, "host": {...}}
                                              or {"type": "error", "error": "..."} and close
    {"type": "step", "step": NAME,    ->
     "params": {...}}                   <-   {"type": "ready", ...} (ports to connect to)
    {"type": "finish"}                ->
                                        <-   {"type": "result", "data": {...}}
    {"type": "bye"}                   ->     (the agent closes)

Any request the agent cannot honour (bad JSON, an unknown step, bad parameters, a step
out of order) gets {"type": "error", "error": "..."}; the agent then closes everything
the step opened. The version is checked first: a controller of another version is
told which one the agent speaks.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

VERSION = 1
#: The agent's default control port (documented in docs/peer.md). Not in the ephemeral
#: range of Linux (32768-60999) or of IANA's (49152-65535), so an outgoing connection
#: does not take it by chance.
DEFAULT_PORT = 7380
#: Largest frame either side accepts: control messages are a few hundred bytes.
MAX_FRAME = 1 << 20
HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The other side broke the protocol (or went away); the message says how."""


def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes is over the {MAX_FRAME} byte limit")
    sock.sendall(HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, end: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for a control frame")
        sock.settimeout(left)
        chunk = sock.recv(min(65536, n - len(buf)))
        if not chunk:
            raise ProtocolError("the other side closed the control connection")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, timeout: float) -> dict[str, Any]:
    """One frame's object, within `timeout` seconds. ProtocolError for an oversized
    frame, bad JSON, a non-object, or a closed connection; TimeoutError if none came."""
    end = time.monotonic() + timeout
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size, end))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
    raw = _recv_exact(sock, size, end)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"frame is not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("frame is not an object with a 'type'")
    return obj
