"""The socket pairs, the sender and the late receiver's wait, shared by the boundary
cases."""

from __future__ import annotations

import os
import socket
import time

from sockprobe import kernel
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes.framing.params import HEADER, TRANSPORT_LABEL
from sockprobe.report import NA

#: Late receiver: how long the queues may stay unchanged before we conclude the sender is
#: blocked on full buffers and the receiver has to start reading while it writes.
STALL_S = 0.15
NO_TCP_INFO = "TCP_INFO (tcpi_data_segs_out) is not available on this platform"


# -- socket pairs ---------------------------------------------------------------------------
def pair(lab: Lab, transport: str, tag: str) -> tuple[socket.socket, socket.socket]:
    """(sender, receiver), fresh for every case."""
    if transport in ("tcp", "tcp-nodelay"):

        def configure(s: socket.socket) -> None:
            if transport == "tcp-nodelay":
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        return lab.tcp_pair(configure_client=configure, name=f"framing {tag}")
    if transport == "udp":
        tx, rx = lab.udp_pair()
        for ep in lab.endpoints[-2:]:
            ep["role"] = f"framing {tag} {ep['role'].removeprefix('udp ')}"
        return tx, rx
    # AF_UNIX from socketpair(): connected, unnamed, nothing to unlink afterwards. `ss -x`
    # lists them by inode, so the inodes go into the endpoints.
    kind = socket.SOCK_STREAM if transport == "unix-stream" else socket.SOCK_SEQPACKET
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    lab.adopt(a)
    lab.adopt(b)
    lab.endpoints.append(
        {
            "role": f"framing {tag}",
            "local": f"socketpair inode {os.fstat(a.fileno()).st_ino}",
            "remote": f"inode {os.fstat(b.fileno()).st_ino}",
            "proto": "unix",
        }
    )
    return a, b


def unix_unsupported(transport: str) -> NA | None:
    """Capability check by trying (macOS has no AF_UNIX SOCK_SEQPACKET; Windows' AF_UNIX
    is stream-only)."""
    family = getattr(socket, "AF_UNIX", None)
    kind = (
        socket.SOCK_STREAM
        if transport == "unix-stream"
        else getattr(socket, "SOCK_SEQPACKET", None)
    )
    if family is None or kind is None:
        return NA(f"{TRANSPORT_LABEL[transport]} sockets do not exist on this platform")
    try:
        a, b = socket.socketpair(family, kind)
    except OSError as exc:
        return NA(f"{TRANSPORT_LABEL[transport]}: socketpair() failed here ({exc})")
    a.close()
    b.close()
    return None


# -- the sender -----------------------------------------------------------------------------
def frames(reader: str, msgs: list[bytes]) -> list[bytes]:
    """What goes into each send(): the message, with its header or its newline."""
    if reader == "prefix":
        return [HEADER.pack(len(m)) + m for m in msgs]
    if reader == "readline":
        return [m + b"\n" for m in msgs]
    return list(msgs)


def send(
    lab: Lab, sock: socket.socket, frames: list[bytes], progress: list[int], tcp: bool
) -> int | None:
    """One send() per message, back to back, then close: a stream reader then sees EOF.

    For TCP, returns how many data segments carried the messages: the delta of TCP_INFO
    tcpi_data_segs_out (tcp(7)), read once everything is sent and acknowledged, so that
    what went on the wire can be set beside what the reader's recv() calls returned."""
    before = _data_segs(sock) if tcp else None
    sock.settimeout(lab.deadline.timeout(10.0, "sending the messages"))
    for f in frames:
        # sendall: a stream send() may accept part of a large frame (partial-send); for a
        # datagram socket it is a single send() of the whole datagram.
        sock.sendall(f)
        progress[0] += 1
    segments = None
    if before is not None:
        end = time.monotonic() + lab.deadline.timeout(2.0, "waiting for the sender to drain")
        while time.monotonic() < end:
            info = kernel.tcp_info(sock)
            if info is None or (not info.notsent_bytes and info.unacked == 0):
                break
            if info.state_name != "ESTABLISHED":
                break  # shut down under us (Ctrl-C or an error: the Lab is cleaning up)
            time.sleep(0.0005)
        after = _data_segs(sock)
        segments = None if after is None else after - before
    lab.close(sock)
    return segments


def _data_segs(sock: socket.socket) -> int | None:
    info = kernel.tcp_info(sock)
    return None if info is None else info.data_segs_out


def settle(
    sender: Worker, rx: socket.socket, stream: bool, total: int, progress: list[int], d: Deadline
) -> bool:
    """Late receiver: wait until every byte is queued at the receiver (a byte stream where
    SIOCINQ can be read) or the sender has finished (datagrams, or no SIOCINQ). Either way
    the sender's last send() has returned, so what the reads return follows from the
    kernel's rules alone.

    Returns False when the sender and the queue stopped making progress first: the buffers
    are full, the receiver must read while the sender writes, and the outcome then depends
    on timing. A sender that has not begun (its thread not yet scheduled, on a loaded
    machine) is not a stall: that waits for the overall cap instead."""
    end = time.monotonic() + d.timeout(5.0, "waiting for the sender to finish")
    last: tuple[int, int | None] = (-1, None)
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        queued = kernel.inq(rx) if stream else None
        if queued is not None:
            if queued >= total:
                return True
        elif not sender.thread.is_alive():
            return True
        state = (progress[0], queued)
        began = progress[0] > 0 or bool(queued)
        if state != last:
            last, changed = state, now
        elif (began and now - changed > STALL_S) or now > end:
            return False
        time.sleep(0.0005)
