"""The readers: one recv() per message, tiny reads, a length prefix, readline()."""

from __future__ import annotations

import socket

from sockprobe.lab import Deadline
from sockprobe.probes.framing.params import HEADER
from sockprobe.probes.framing.tally import Outcome

#: UDP has no EOF: once the expected datagrams stop coming for this long, the rest are lost.
UDP_IDLE_S = 0.25
NO_READLINE = (
    "readline() needs a byte stream: on a datagram socket makefile()'s buffered reads take "
    "whole datagrams, so the datagrams, not the newlines, set the boundaries (and UDP has "
    "no EOF)"
)


# -- the readers ----------------------------------------------------------------------------


def read_stream(sock: socket.socket, size: int, deadline: Deadline) -> Outcome:
    """recv(size) until EOF; every returned chunk is what a naive reader takes for a message."""
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading the stream"))
    while True:
        deadline.check("reading the stream")
        chunk = sock.recv(size)
        if not chunk:
            return o
        o.units.append(chunk)
        o.calls += 1


def recv_datagram(
    sock: socket.socket, size: int, o: Outcome, deadline: Deadline, udp: bool
) -> bytes | None:
    """One datagram via recvmsg (the same read as recv(size), plus msg_flags), or None at
    the end: EOF for SEQPACKET, no datagram within UDP_IDLE_S for UDP."""
    sock.settimeout(deadline.timeout(UDP_IDLE_S if udp else 5.0, "reading datagrams"))
    try:
        data, _anc, flags, _addr = sock.recvmsg(size)
    except TimeoutError:
        if udp and not deadline.expired():
            return None
        raise
    if not data and not udp:
        return None  # SEQPACKET: the peer closed (every message here is at least 1 byte)
    o.calls += 1
    if flags & socket.MSG_TRUNC:
        o.msg_trunc += 1
    return data


def read_datagrams(
    sock: socket.socket, size: int, expected: int, deadline: Deadline, udp: bool
) -> Outcome:
    o = Outcome("", "")
    while not udp or len(o.units) < expected:
        data = recv_datagram(sock, size, o, deadline, udp)
        if data is None:
            break
        o.units.append(data)
    return o


def recv_exactly(sock: socket.socket, n: int, o: Outcome, deadline: Deadline) -> bytes:
    """Exactly n bytes from a stream, in a loop: recv(n) may return fewer, and that holds
    for a 4-byte header too. Returns fewer than n only at EOF."""
    buf = bytearray()
    while len(buf) < n:
        deadline.check("reading a length-prefixed message")
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        o.calls += 1
        buf += chunk
    return bytes(buf)


def read_prefix_stream(sock: socket.socket, deadline: Deadline) -> Outcome:
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading length-prefixed messages"))
    while True:
        head = recv_exactly(sock, HEADER.size, o, deadline)
        if len(head) < HEADER.size:
            if head:  # EOF inside a header: a broken frame, reported as such
                o.units.append(b"")
            return o
        (n,) = HEADER.unpack(head)
        body = recv_exactly(sock, n, o, deadline)
        o.units.append(body)
        if len(body) < n:
            return o


def read_prefix_datagrams(
    sock: socket.socket, expected: int, deadline: Deadline, udp: bool
) -> Outcome:
    """A datagram read in pieces loses its rest, so the header is peeked (MSG_PEEK leaves
    the datagram queued) and header + payload are read in one call of the right size."""
    o = Outcome("", "")
    while not udp or len(o.units) < expected:
        sock.settimeout(deadline.timeout(UDP_IDLE_S if udp else 5.0, "reading datagrams"))
        try:
            head = sock.recv(HEADER.size, socket.MSG_PEEK)
        except TimeoutError:
            if udp and not deadline.expired():
                break
            raise
        if not head:
            break
        o.calls += 1
        # A datagram cannot exceed 64 KiB: never size a read from a bogus header.
        n = min(HEADER.unpack(head)[0], 65_535) if len(head) == HEADER.size else 0
        data = recv_datagram(sock, HEADER.size + n, o, deadline, udp)
        if data is None:
            break
        o.units.append(data[HEADER.size :])
    return o


def read_lines(sock: socket.socket, deadline: Deadline) -> Outcome:
    """makefile('rb').readline() until EOF. The file's raw reads are counted by wrapping
    its readinto() (BufferedReader looks the method up on the instance)."""
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading lines"))
    f = sock.makefile("rb")
    raw = f.raw
    inner = raw.readinto

    def counting(b: memoryview) -> int | None:
        n = inner(b)
        if n:
            o.calls += 1
        return n

    setattr(raw, "readinto", counting)  # noqa: B010 - assigning a method needs setattr for mypy
    try:
        while True:
            deadline.check("reading lines")
            line = f.readline()
            if not line:
                return o
            o.units.append(line[:-1] if line.endswith(b"\n") else line)
    finally:
        f.close()
