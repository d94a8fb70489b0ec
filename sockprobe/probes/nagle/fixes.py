"""The fixes for write-write-read, each measured as a write-write-read row of its own
beside the modes (wwr.py runs the rounds; this module says how each fix writes the
request, how its server reads it, and what its row shows).

- one-send / sendmsg: the whole request in one system call (a joined buffer, or
  sendmsg(2) with two buffers): one segment, nothing for Nagle to hold.
- msg-more: send(first, MSG_MORE) then send(second). MSG_MORE (send(2), tcp(7)) corks
  for that one call: tcp_sendmsg() pushes with TCP_NAGLE_CORK while the flag is set, so
  the first piece waits in the queue and the second send() pushes both as one segment.
- quickack-once / quickack-rearmed: the server sets TCP_QUICKACK (tcp(7)). Setting it
  leaves pingpong (interactive) mode and sends any ACK already scheduled
  (tcp.c do_tcp_setsockopt); it is not sticky: the server's next reply, made within the
  ACK timeout of the last arrival, puts the connection back in pingpong mode
  (tcp_output.c tcp_event_data_sent -> inet_csk_inc_pingpong_cnt) and the delayed ACKs
  return. Set once after accept() it helps the first round only; re-armed after every
  recv() it sends the ACK of the first piece at once, every round.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from sockprobe.probes import plural
from sockprobe.probes.nagle import _wire as w
from sockprobe.probes.nagle.params import MSG_MORE, TCP_QUICKACK

if TYPE_CHECKING:  # wwr imports this module; a runtime import would be circular
    from sockprobe.probes.nagle.wwr import Wwr

#: Why a fix cannot run on this platform (its option does not exist), per fix.
MISSING = {
    "msg-more": "MSG_MORE does not exist on this platform",
    "quickack-once": "TCP_QUICKACK does not exist on this platform",
    "quickack-rearmed": "TCP_QUICKACK does not exist on this platform",
}


def available(fix: str) -> bool:
    if fix == "msg-more":
        return MSG_MORE is not None
    if fix.startswith("quickack"):
        return TCP_QUICKACK is not None
    return True


def write_request(mode: str, c: socket.socket, piece: bytes) -> None:
    """Write one two-piece request the way `mode` (a mode or a fix) does."""
    if mode == "one-send":
        c.sendall(piece + piece)
    elif mode == "sendmsg":
        n = c.sendmsg([piece, piece])
        if n < 2 * len(piece):  # a partial sendmsg: finish it (never seen for 20 B)
            c.sendall((piece + piece)[n:])
    elif mode == "msg-more":
        assert MSG_MORE is not None
        c.sendall(piece, MSG_MORE)
        c.sendall(piece)
    else:
        c.sendall(piece)
        c.sendall(piece)


def _quickack(s: socket.socket) -> None:
    assert TCP_QUICKACK is not None
    s.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)


def serve_setup(mode: str, s: socket.socket) -> None:
    if mode == "quickack-once":
        _quickack(s)


def after_server_recv(mode: str, s: socket.socket) -> None:
    if mode == "quickack-rearmed":
        _quickack(s)


def findings(by_mode: dict[str, Wwr]) -> list[str]:
    """One sentence for the fixes: each one's median and segments per request beside
    Nagle's, and what TCP_QUICKACK set once vs re-armed shows about stickiness."""
    out: list[str] = []
    base = by_mode.get("nagle")
    rows = [by_mode[f] for f in ("one-send", "sendmsg", "msg-more") if f in by_mode]
    if rows:
        parts = []
        for r in rows:
            per = r.per_request
            segs = "" if per is None else f", {per:.2f} segments/request"
            parts.append(f"{r.mode} {w.ms(r.median)} ms{segs}")
        against = (
            ""
            if base is None
            else f" (Nagle with two send() calls: {w.ms(base.median)} ms"
            + ("" if base.per_request is None else f", {base.per_request:.2f} segments")
            + ")"
        )
        out.append(
            "Fixes that keep Nagle on and write the request in one go, medians: "
            + "; ".join(parts)
            + against
            + "."
        )
    once, rearmed = by_mode.get("quickack-once"), by_mode.get("quickack-rearmed")
    if once is not None and rearmed is not None:
        text = (
            f"TCP_QUICKACK on the server: set once after accept(), median {w.ms(once.median)} "
            f"ms with {once.stalled} of {len(once.rtts_ms)} rounds stalled; re-armed after "
            f"every recv(), median {w.ms(rearmed.median)} ms with {rearmed.stalled} stalled"
        )
        if once.stalled and not rearmed.stalled:
            text += (
                f". Set once it helped {plural(once.fast_first, 'round')} and no more: the "
                "option is not sticky, the server's replies put the connection back in delayed-ACK "
                "(pingpong) mode"
            )
        elif not once.stalled:
            text += (
                f". Set once, no round stalled in {len(once.rtts_ms)} (too few rounds to see "
                "it wear off)"
            )
        out.append(text + ".")
    return out
