"""UDP specifics the socket module leaves out: SO_RXQ_OVFL, IP(V6)_RECVERR, true datagram
sizes, per-socket drop counts and the UDP counters of /proc/net/snmp and snmp6.

Everything here is Linux behaviour; on another platform each helper says "unknown"
(None or False) and the probe shows `n/a` for that measurement.

- SO_RXQ_OVFL (socket(7), value 40 in include/uapi/asm-generic/socket.h; Python does not
  export the name): once enabled, the kernel stamps every datagram it queues with the
  socket's cumulative drop count (sk_drops) and hands it to recvmsg() as a 4-byte
  SOL_SOCKET/SO_RXQ_OVFL control message. Datagrams queued while the count was still 0
  carry no control message at all.
- IP_RECVERR (ip(7), 11) and IPV6_RECVERR (ipv6(7), 25): an unconnected UDP socket ignores
  ICMP errors unless this is set; with it the error is reported on the next call.
- MSG_TRUNC as an *input* flag (recv(2); Internet datagram sockets since Linux 2.6.8):
  the call returns the real length of the datagram even when the buffer was shorter. Only use it
  with recv_into()/recvmsg_into(), whose return value is just a number: Python's plain
  recv() would resize its result to that length and hand back bytes past the buffer
  that the kernel never wrote.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

IS_LINUX = sys.platform.startswith("linux")

SO_RXQ_OVFL: int | None = getattr(socket, "SO_RXQ_OVFL", 40 if IS_LINUX else None)
IP_RECVERR: int | None = getattr(socket, "IP_RECVERR", 11 if IS_LINUX else None)
IPV6_RECVERR: int | None = getattr(socket, "IPV6_RECVERR", 25 if IS_LINUX else None)
MSG_TRUNC: int | None = getattr(socket, "MSG_TRUNC", None)

#: UDP-level options (include/uapi/linux/udp.h; SOL_UDP is IPPROTO_UDP, 17). UDP_CORK
#: (udp(7), Linux 2.5.44) queues every send into one datagram until it is cleared;
#: UDP_SEGMENT (Linux 4.18) makes one send leave as datagrams of gso_size bytes; UDP_GRO
#: (Linux 5.0) lets one recvmsg() return several datagrams of a flow glued together, with
#: their size in a SOL_UDP/UDP_GRO control message (an int). Python 3.11 exports only
#: UDP_CORK, and not everywhere.
UDP_CORK: int | None = getattr(socket, "UDP_CORK", 1 if IS_LINUX else None)
UDP_SEGMENT: int | None = 103 if IS_LINUX else None
UDP_GRO: int | None = 104 if IS_LINUX else None
#: IP-level path-MTU options (include/uapi/linux/in.h, ip(7)).
IP_MTU_DISCOVER: int | None = getattr(socket, "IP_MTU_DISCOVER", 10 if IS_LINUX else None)
IP_MTU: int | None = getattr(socket, "IP_MTU", 14 if IS_LINUX else None)
IP_PMTUDISC_DO = 2
#: The IPv6 counterparts (include/uapi/linux/in6.h, ipv6(7)); same mode numbers.
IPV6_MTU_DISCOVER: int | None = getattr(socket, "IPV6_MTU_DISCOVER", 23 if IS_LINUX else None)
IPV6_MTU: int | None = getattr(socket, "IPV6_MTU", 24 if IS_LINUX else None)
#: The IPv6 fragment header (RFC 8200) each fragment carries.
IPV6_HEADER = 40
IPV6_FRAG_HEADER = 8
PMTUDISC_NAMES = {0: "DONT", 1: "WANT", 2: "DO", 3: "PROBE", 4: "INTERFACE", 5: "OMIT"}

#: Header bytes that come out of the 16-bit IP length field: the IPv4 total length
#: (RFC 791) counts its own 20-byte header, the IPv6 payload length (RFC 8200) does not;
#: both count the 8-byte UDP header. Used only to explain a limit the probe measures.
IPV4_HEADER = 20
UDP_HEADER = 8

_U32 = struct.Struct("=I")


def udp_payload_limit(family: int) -> int:
    """The largest UDP payload the length fields allow (65507 for IPv4, 65527 for IPv6
    without jumbograms). The probe *finds* the limit by sending; this is the arithmetic
    it is compared against."""
    ip_overhead = IPV4_HEADER if family == socket.AF_INET else 0
    return 0xFFFF - ip_overhead - UDP_HEADER


def enable_rxq_ovfl(sock: socket.socket) -> bool:
    """Ask for the drop count on every queued datagram; False where unsupported."""
    if SO_RXQ_OVFL is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    except OSError:  # ENOPROTOOPT: an old kernel or another OS with no such option
        return False
    return True


def rxq_ovfl_space() -> int:
    """Control-buffer size for one SO_RXQ_OVFL message."""
    return socket.CMSG_SPACE(_U32.size)


def rxq_ovfl_drops(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The cumulative drop count carried by a datagram, or None if it carried none
    (the socket had not dropped anything when this datagram was queued)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= _U32.size:
            return int(_U32.unpack_from(data)[0])
    return None


_INT = struct.Struct("=i")


def gro_space() -> int:
    """Control-buffer size for one UDP_GRO message."""
    return socket.CMSG_SPACE(_INT.size)


def gro_segment_size(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The segment size a UDP_GRO receive carried (udp_cmsg_recv() in include/net/udp.h
    adds it only when the buffer it returns is a GSO one), or None."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_UDP and kind == UDP_GRO and len(data) >= _INT.size:
            return int(_INT.unpack_from(data)[0])
    return None


def enable_recverr(sock: socket.socket) -> bool:
    """IP_RECVERR / IPV6_RECVERR on: ICMP errors reach an unconnected UDP socket."""
    if sock.family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_RECVERR
    else:
        level, opt = socket.IPPROTO_IP, IP_RECVERR
    if opt is None:
        return False
    try:
        sock.setsockopt(level, opt, 1)
    except OSError:
        return False
    return True


def recv_true_size(sock: socket.socket, buf: bytearray) -> int | None:
    """Receive one datagram into `buf` and return its real size, which may exceed
    len(buf) (Linux: MSG_TRUNC as an input flag, udp(7)). None where MSG_TRUNC does not
    exist; the datagram is still consumed then, with a plain recv_into()."""
    if MSG_TRUNC is None or not IS_LINUX:
        sock.recv_into(buf, len(buf))
        return None
    return sock.recv_into(buf, len(buf), MSG_TRUNC)


@dataclass(frozen=True)
class UdpSocketRow:
    """What /proc/net/udp{,6} says about one socket."""

    rx_queue: int
    drops: int | None


def proc_row(sock: socket.socket) -> UdpSocketRow | None:
    """Find this socket's row in /proc/net/udp or udp6 by inode (the number fstat gives
    for the socket's fd; the file's "inode" column is the same), or None.

    Matching by inode, not by port: another socket may share the port (SO_REUSEPORT) and
    the inode is unique to this socket.
    """
    from sockprobe import kernel

    if not IS_LINUX:
        return None
    ino = os.fstat(sock.fileno()).st_ino
    proto = "udp6" if sock.family == socket.AF_INET6 else "udp"
    port = sock.getsockname()[1]
    for row in kernel.proc_net_sockets(proto, port):
        if row.inode == ino:
            return UdpSocketRow(rx_queue=row.rx_queue, drops=row.drops)
    return None


def udp_counters(family: int) -> dict[str, int]:
    """The UDP counters of this network namespace, for one family:
    {"RcvbufErrors": n, "NoPorts": n, ...}.

    IPv4's are the `Udp:` lines of /proc/net/snmp; IPv6 keeps its own in
    /proc/net/snmp6, one `Udp6RcvbufErrors  12` pair per line. Empty off Linux.
    """
    from sockprobe import kernel

    if family != socket.AF_INET6:
        return dict(kernel.netstat_counters().get("Udp", {}))
    out: dict[str, int] = {}
    try:
        lines = Path("/proc/net/snmp6").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("Udp6"):
            try:
                out[parts[0].removeprefix("Udp6")] = int(parts[1])
            except ValueError:
                continue
    return out
