"""What a TCP connection negotiated in its handshake, from TCP_INFO (tcp(7); layout in
include/uapi/linux/tcp.h): the options byte (tcpi_options: TCPI_OPT_TIMESTAMPS 1,
TCPI_OPT_SACK 2, TCPI_OPT_WSCALE 4), the two window-scale nibbles, the MSS this end sends
with (tcpi_snd_mss, the MSS less the timestamp option when it is on) and the MSS it
advertised (tcpi_advmss). Linux only; None elsewhere or for a non-TCP socket.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP_INFO = getattr(socket, "TCP_INFO", 11)
OPT_TIMESTAMPS = 1
OPT_SACK = 2
OPT_WSCALE = 4


@dataclass(frozen=True)
class Negotiated:
    timestamps: bool
    sack: bool
    wscale: bool
    #: The peer's window scale (what this end applies to windows it receives).
    snd_wscale: int
    #: This end's window scale (what it applies to windows it advertises).
    rcv_wscale: int
    snd_mss: int
    advmss: int


def negotiated(sock: socket.socket) -> Negotiated | None:
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104)
    except OSError:
        return None
    if len(raw) < 88:
        return None
    options = raw[5]
    # `__u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4;` -- the first bitfield takes the
    # low nibble on the little-endian ABIs Linux runs on.
    scales = raw[6]
    snd_mss, advmss = struct.unpack_from("=I", raw, 16)[0], struct.unpack_from("=I", raw, 84)[0]
    return Negotiated(
        timestamps=bool(options & OPT_TIMESTAMPS),
        sack=bool(options & OPT_SACK),
        wscale=bool(options & OPT_WSCALE),
        snd_wscale=scales & 0x0F,
        rcv_wscale=scales >> 4,
        snd_mss=snd_mss,
        advmss=advmss,
    )
