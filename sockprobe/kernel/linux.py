"""Linux back end: TCP_INFO, SIOCINQ/SIOCOUTQ, /proc/sys and /proc/net parsers."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from dataclasses import dataclass

from sockprobe.kernel.common import TcpInfo

# tcp(7): TCP_INFO = 11 (socket.TCP_INFO exists on Linux builds of Python, but the
# number is fixed in the uapi header, so keep a fallback).
TCP_INFO = getattr(socket, "TCP_INFO", 11)
# tcp(7) ioctls: SIOCINQ is FIONREAD (unread bytes in the receive queue), SIOCOUTQ is
# TIOCOUTQ (bytes in the send queue not yet acknowledged by the peer, plus unsent).
SIOCINQ = 0x541B
SIOCOUTQ = 0x5411

# Byte offsets in struct tcp_info (include/uapi/linux/tcp.h). The kernel copies
# min(optlen, sizeof(struct tcp_info)), so an older kernel may return fewer bytes: every
# field past the returned length is reported as None.
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_OFF = {
    "rto": 8,
    "ato": 12,
    "snd_mss": 16,
    "rcv_mss": 20,
    "unacked": 24,
    "retrans": 36,
    "rtt": 68,
    "snd_cwnd": 80,
    "total_retrans": 100,
    "segs_out": 136,
    "segs_in": 140,
    "notsent_bytes": 144,
    "data_segs_in": 152,
    "data_segs_out": 156,
    "bytes_sent": 200,  # u64
}


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """Decode TCP_INFO for a TCP socket (tcp(7)); None if the socket is not TCP."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return None

    def u32(name: str) -> int | None:
        off = _OFF[name]
        return _U32.unpack_from(raw, off)[0] if len(raw) >= off + 4 else None

    def req(name: str) -> int:
        v = u32(name)
        return 0 if v is None else v

    bytes_sent = _U64.unpack_from(raw, 200)[0] if len(raw) >= 208 else None
    return TcpInfo(
        state=raw[0],
        ca_state=raw[1],
        rto_us=req("rto"),
        ato_us=req("ato"),
        snd_mss=req("snd_mss"),
        rcv_mss=req("rcv_mss"),
        unacked=req("unacked"),
        retrans=req("retrans"),
        rtt_us=req("rtt"),
        snd_cwnd=req("snd_cwnd"),
        total_retrans=req("total_retrans"),
        segs_out=u32("segs_out"),
        segs_in=u32("segs_in"),
        notsent_bytes=u32("notsent_bytes"),
        data_segs_in=u32("data_segs_in"),
        data_segs_out=u32("data_segs_out"),
        bytes_sent=bytes_sent,
    )


def _ioctl_int(sock: socket.socket, request: int) -> int | None:
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0])
    except OSError:
        # EINVAL on a listening socket: there is no byte queue to measure.
        return None


def inq(sock: socket.socket) -> int | None:
    """Bytes waiting in the receive queue (SIOCINQ, tcp(7)/udp(7))."""
    return _ioctl_int(sock, SIOCINQ)


def outq(sock: socket.socket) -> int | None:
    """Bytes in the send queue: unsent plus sent-but-unacknowledged (SIOCOUTQ)."""
    return _ioctl_int(sock, SIOCOUTQ)


def sysctl(name: str) -> str | None:
    """Read `net.core.somaxconn` from /proc/sys/net/core/somaxconn; None if absent.

    Values are per network namespace for most net.* settings, so this reads the
    namespace the process runs in, which is the one its sockets live in.
    """
    # open(), not pathlib: `sockprobe port --check -q` pays pathlib's import (~10 ms).
    try:
        with open("/proc/sys/" + name.replace(".", "/"), encoding="utf-8") as f:
            return f.read().strip().replace("\t", " ")
    except OSError:
        return None


def netstat_counters() -> dict[str, dict[str, int]]:
    """SNMP-style counters of this network namespace from /proc/net/netstat and
    /proc/net/snmp (per namespace: in a container, the container's, not the host's).

    Both files pair a header line with a value line per group, e.g.::

        TcpExt: SyncookiesSent SyncookiesRecv ... ListenOverflows ListenDrops ...
        TcpExt: 0 0 ... 7 7 ...

    gives {"TcpExt": {"ListenOverflows": 7, "ListenDrops": 7, ...}}.
    """
    out: dict[str, dict[str, int]] = {}
    for fname in ("/proc/net/netstat", "/proc/net/snmp"):
        try:
            with open(fname, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for head, vals in zip(lines[::2], lines[1::2]):
            group, _, names = head.partition(":")
            _, _, values = vals.partition(":")
            counters = out.setdefault(group, {})
            for k, v in zip(names.split(), values.split()):
                try:
                    counters[k] = int(v)
                except ValueError:
                    continue
    return out


@dataclass(frozen=True)
class ProcSocket:
    """One row of /proc/net/{tcp,tcp6,udp,udp6}."""

    proto: str
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    tx_queue: int
    rx_queue: int
    timer: int
    #: Time until the timer fires, in seconds (the file gives USER_HZ clock ticks).
    timer_s: float
    uid: int
    inode: int
    drops: int | None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _addr(field: str, v6: bool) -> tuple[str, int]:
    """Decode `0100007F:1F90` -> ("127.0.0.1", 8080).

    The kernel prints each 32-bit word of the address in host byte order, so the
    words are packed back natively before inet_ntop.
    """
    hexaddr, _, hexport = field.partition(":")
    if v6:
        words = [int(hexaddr[i : i + 8], 16) for i in range(0, 32, 8)]
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack("=4I", *words))
    else:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(hexaddr, 16)))
    return ip, int(hexport, 16)


def proc_net_sockets(proto: str, port: int | None = None) -> list[ProcSocket]:
    """Parse /proc/net/<proto> (tcp, tcp6, udp, udp6); filter on local port if given.

    A TCP socket that is bound but not listening is not listed here (see
    kernel.sockdiag for the query that finds it).
    """
    v6 = proto.endswith("6")
    try:
        with open(f"/proc/net/{proto}") as f:
            lines = f.readlines()[1:]
    except OSError:
        return []
    rows = []
    want = f":{port:04X} " if port is not None else None
    for line in lines:
        if want is not None and want not in line[:60]:
            continue
        p = line.split()
        if len(p) < 10:
            continue
        local = _addr(p[1], v6)
        if port is not None and local[1] != port:
            continue
        tx, rx = (int(x, 16) for x in p[4].split(":"))
        tr, when = p[5].split(":")
        rows.append(
            ProcSocket(
                proto=proto,
                local=local,
                remote=_addr(p[2], v6),
                state=int(p[3], 16),
                tx_queue=tx,
                rx_queue=rx,
                timer=int(tr, 16),
                timer_s=int(when, 16) / _CLK_TCK,
                uid=int(p[7]),
                inode=int(p[9]),
                drops=int(p[12]) if proto.startswith("udp") and len(p) > 12 else None,
            )
        )
    return rows
