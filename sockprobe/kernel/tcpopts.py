"""Which TCP options a connection negotiated, from TCP_INFO's tcpi_options (Linux).

include/uapi/linux/tcp.h: tcpi_options is the sixth byte of struct tcp_info, a bit set
of TCPI_OPT_TIMESTAMPS (1), TCPI_OPT_SACK (2) and TCPI_OPT_WSCALE (4), set when both
ends offered the option in the handshake (tcp_get_info in net/ipv4/tcp.c).
"""

from __future__ import annotations

import socket
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
