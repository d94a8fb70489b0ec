"""Socket options and state behind `sockprobe dead-peer` (Linux; others raise ENOPROTOOPT).

- `drop_everything(sock)`: attach a one-instruction classic BPF socket filter (`ret #0`,
  socket(7) SO_ATTACH_FILTER) that makes the socket's kernel discard every packet that
  arrives for it. TCP runs the filter in tcp_v4_rcv()/tcp_v6_rcv() (tcp_filter(), after
  the socket lookup and before any processing), so nothing is acknowledged, no window is
  advertised, no RST is sent: from the other end the peer is silently gone, exactly like
  a crashed host or a dropped NAT entry. No privilege is needed to filter one's own socket.
  On a listener the same filter drops SYNs, which makes a black hole for connect().
- `set_keepalive`, `set_user_timeout`: SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL,
  TCP_KEEPCNT, and TCP_USER_TIMEOUT (tcp(7)).
- `timers(sock)`: the timer fields of TCP_INFO that `kernel.TcpInfo` does not carry:
  `tcpi_retransmits`, `tcpi_probes` and `tcpi_backoff` are bytes 2, 3 and 4 of struct
  tcp_info (include/uapi/linux/tcp.h), the current count of unanswered retransmissions,
  of unanswered keepalive or zero-window probes (icsk_probes_out), and the RTO backoff
  exponent.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from dataclasses import dataclass

from sockprobe import kernel

IS_LINUX = sys.platform.startswith("linux")

#: include/uapi/asm-generic/socket.h
SO_ATTACH_FILTER = 26
#: include/uapi/linux/tcp.h
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
TCP_USER_TIMEOUT = 18
#: BPF_RET | BPF_K with k = 0: accept 0 bytes of the packet, i.e. drop it (filter.h).
_RET_K = 0x06
_INSN = struct.Struct("=HBBI")


def _unsupported(what: str) -> OSError:
    return OSError(errno.ENOPROTOOPT, f"{what} is Linux-only in sockprobe")


def drop_everything(sock: socket.socket) -> None:
    """Make `sock` deaf: its kernel drops every packet addressed to it from now on."""
    if not IS_LINUX:
        raise _unsupported("SO_ATTACH_FILTER")
    code = ctypes.create_string_buffer(_INSN.pack(_RET_K, 0, 0, 0))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }; the kernel
    # copies the program during the call (sk_attach_filter), so the buffer may go after.
    fprog = struct.pack("@HP", 1, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def set_keepalive(sock: socket.socket, idle_s: int, intvl_s: int, cnt: int) -> None:
    """SO_KEEPALIVE on, with its three per-socket overrides (whole seconds, tcp(7))."""
    if not IS_LINUX:
        raise _unsupported("TCP_KEEPIDLE")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL, intvl_s)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT, cnt)


def set_user_timeout(sock: socket.socket, ms: int) -> None:
    """TCP_USER_TIMEOUT: the longest transmitted data may stay unacknowledged (tcp(7))."""
    if not IS_LINUX:
        raise _unsupported("TCP_USER_TIMEOUT")
    sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, ms)


@dataclass(frozen=True)
class Timers:
    """What the sender's kernel says about its attempts to reach the peer."""

    state: str
    retransmits: int
    probes: int
    backoff: int
    total_retrans: int
    rto_ms: float
    unacked: int


def timers(sock: socket.socket) -> Timers | None:
    """TCP_INFO's timer fields for `sock`; None where TCP_INFO is unavailable."""
    if not IS_LINUX:
        return None
    info = kernel.tcp_info(sock)
    if info is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return None
    return Timers(
        state=info.state_name,
        retransmits=raw[2],
        probes=raw[3],
        backoff=raw[4],
        total_retrans=info.total_retrans,
        rto_ms=info.rto_us / 1000,
        unacked=info.unacked,
    )
