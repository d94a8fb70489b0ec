"""How many bytes a TCP sender's kernel has taken from the application, counted exactly.

After sendall() fails, Python cannot say how much went. The kernel can, in two ways:

- SIOCOUTQ (sender) + SIOCINQ (receiver), tcp(7): what is still queued at each end.
  Exact only once the receiver has acknowledged everything it queued; until its delayed
  ACK leaves, those bytes are in both queues and count twice.
- tcpi_bytes_acked + SIOCOUTQ on the sender alone: everything the peer acknowledged plus
  everything still queued, i.e. every byte ever written into the socket, at any moment.
  `tcpi_bytes_acked` (struct tcp_info, include/uapi/linux/tcp.h, Linux >= 4.1; the
  RFC 4898 HCThruOctetsAcked counter) advances with snd_una, and the ACK of the SYN moves
  snd_una by one sequence number that carries no data, so one is subtracted (until a FIN
  is acknowledged, which adds another; this is read before any shutdown).

The shared TcpInfo record does not carry bytes_acked, so it is read here, at its fixed
offset, from the same TCP_INFO getsockopt.
"""

from __future__ import annotations

import socket
import struct
import sys

from sockprobe import kernel

IS_LINUX = sys.platform.startswith("linux")
TCP_INFO = getattr(socket, "TCP_INFO", 11)
#: Offset of the u64 tcpi_bytes_acked: after 8 bytes of u8 fields, 24 u32 fields (up to
#: tcpi_total_retrans at 100) and the two u64 pacing rates at 104 and 112.
BYTES_ACKED_OFFSET = 120
_U64 = struct.Struct("=Q")


def bytes_acked(sock: socket.socket) -> int | None:
    """tcpi_bytes_acked, or None off Linux or on a kernel whose tcp_info is shorter."""
    if not IS_LINUX:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < BYTES_ACKED_OFFSET + _U64.size:
        return None
    return int(_U64.unpack_from(raw, BYTES_ACKED_OFFSET)[0])


def bytes_taken(sock: socket.socket) -> int | None:
    """Data bytes the kernel has accepted from the application on a connected TCP socket
    that has not shut down its write side: acknowledged (minus the SYN) plus queued."""
    acked = bytes_acked(sock)
    queued = kernel.outq(sock)
    if acked is None or queued is None or acked < 1:
        return None
    return acked - 1 + queued
