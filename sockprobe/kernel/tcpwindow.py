"""Receive-side and window fields of Linux `struct tcp_info` that the shared TcpInfo
record does not carry: the receive-buffer autotuning state and the window scales.

Offsets are those of include/uapi/linux/tcp.h. The kernel copies
min(optlen, sizeof(struct tcp_info)) bytes, so a field past the end of an older kernel's
reply is None, never 0:

- byte 6: `tcpi_snd_wscale` (low 4 bits) and `tcpi_rcv_wscale` (high 4 bits): the window
  scale the peer announced in its SYN / SYN-ACK and the one this end announced (both 0
  when scaling was not negotiated);
- `tcpi_rcv_space` (96): the receiver's per-RTT estimate of what the application reads,
  which tcp_rcv_space_adjust() (tcp_input.c) grows and from which it raises sk_rcvbuf
  while autotuning is on;
- `tcpi_snd_wnd` (228, Linux 5.19+): the window the peer last advertised, after scaling;
- `tcpi_rcv_wnd` (232, Linux 6.7+): the window this end currently advertises;
- `tcpi_last_data_sent` (44) and `tcpi_last_ack_recv` (56): milliseconds since this end
  last sent data and last received an ACK (tcp_get_info, from jiffies stamps), so their
  difference, read once the ACK is in, is how long the peer took to acknowledge, timed by
  the kernel and not by a polling thread that a loaded host may wake late.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

IS_LINUX = sys.platform.startswith("linux")
TCP_INFO = getattr(socket, "TCP_INFO", 11)
_U32 = struct.Struct("=I")
RCV_SPACE = 96
SND_WND = 228
RCV_WND = 232
LAST_DATA_SENT = 44
LAST_ACK_RECV = 56


@dataclass(frozen=True)
class Window:
    snd_wscale: int
    rcv_wscale: int
    rcv_space: int | None
    snd_wnd: int | None
    rcv_wnd: int | None


def window(sock: socket.socket) -> Window | None:
    """The window fields of TCP_INFO, or None off Linux or for a non-TCP socket."""
    if not IS_LINUX:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < 8:
        return None

    def u32(off: int) -> int | None:
        return int(_U32.unpack_from(raw, off)[0]) if len(raw) >= off + 4 else None

    return Window(
        snd_wscale=raw[6] & 0x0F,
        rcv_wscale=raw[6] >> 4,
        rcv_space=u32(RCV_SPACE),
        snd_wnd=u32(SND_WND),
        rcv_wnd=u32(RCV_WND),
    )


def ack_delay_ms(sock: socket.socket) -> int | None:
    """tcpi_last_data_sent - tcpi_last_ack_recv, in ms (jiffies resolution): after the
    ACK of the last data segment came in, how long after that segment it came."""
    if not IS_LINUX:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < LAST_ACK_RECV + 4:
        return None
    sent = int(_U32.unpack_from(raw, LAST_DATA_SENT)[0])
    acked = int(_U32.unpack_from(raw, LAST_ACK_RECV)[0])
    return sent - acked
