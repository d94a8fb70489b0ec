"""Which TCP options a connection negotiated, from TCP_INFO's tcpi_options (Linux).

include/uapi/linux/tcp.h: tcpi_options is the sixth byte of struct tcp_info, a bit set
of TCPI_OPT_TIMESTAMPS (1), TCPI_OPT_SACK (2) and TCPI_OPT_WSCALE (4), set when both
ends offered the option in the handshake (tcp_get_info in net/ipv4/tcp.c).
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4


@dataclass(frozen=True)
class Negotiated:
    timestamps: bool
    sack: bool
    window_scaling: bool


def negotiated(sock: socket.socket) -> Negotiated | None:
    """The options of a connected TCP socket; None off Linux or on a non-TCP socket."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 8)
    except OSError:
        return None
    if len(raw) < 6:
        return None
    opts = raw[5]
    return Negotiated(
        bool(opts & TCPI_OPT_TIMESTAMPS), bool(opts & TCPI_OPT_SACK), bool(opts & TCPI_OPT_WSCALE)
    )


@dataclass(frozen=True)
class Handshake:
    """What the handshake settled, as one end sees it: the options (as `Negotiated`),
    the two window-scale shifts, the MSS this end sends with (tcpi_snd_mss: the MSS less
    the 12-byte timestamp option when timestamps are on) and the MSS it advertised
    (tcpi_advmss)."""

    timestamps: bool
    sack: bool
    window_scaling: bool
    #: The peer's window scale (what this end applies to windows it receives).
    snd_wscale: int
    #: This end's window scale (what it applies to windows it advertises).
    rcv_wscale: int
    snd_mss: int
    advmss: int


def handshake(sock: socket.socket) -> Handshake | None:
    """`negotiated()` plus the window scales and MSSs (struct tcp_info byte 6: the
    `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4` bitfield, low nibble first on the
    little-endian ABIs Linux runs on; tcpi_snd_mss at 16, tcpi_advmss at 84)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 88)
    except OSError:
        return None
    if len(raw) < 88:
        return None
    opts, scales = raw[5], raw[6]
    return Handshake(
        timestamps=bool(opts & TCPI_OPT_TIMESTAMPS),
        sack=bool(opts & TCPI_OPT_SACK),
        window_scaling=bool(opts & TCPI_OPT_WSCALE),
        snd_wscale=scales & 0x0F,
        rcv_wscale=scales >> 4,
        snd_mss=struct.unpack_from("=I", raw, 16)[0],
        advmss=struct.unpack_from("=I", raw, 84)[0],
    )
