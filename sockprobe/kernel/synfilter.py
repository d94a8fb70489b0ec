"""Hold a client's final ACK back from a listener, without root or a firewall.

A classic BPF socket filter (SO_ATTACH_FILTER, socket(7)) on a listening socket also
filters the segments that complete its handshakes: `tcp_v4_rcv()` runs the listener's
filter (`tcp_filter()`) on a segment that matches a half-open request before
`tcp_check_req()` sees it, and on a cookie ACK before `cookie_v4_check()`. A filter that
drops every segment without SYN from chosen client ports therefore lets those clients'
SYNs through (so the listener answers them) and drops their final ACKs: the clients are
ESTABLISHED on their side, the listener has a request (or sent a cookie) and no child
yet. Detaching the filter (SO_DETACH_FILTER) and letting the client send data (which
carries the ACK again) delivers the final ACK at a moment of the caller's choosing.

The program reads the TCP header through the network-header base (SKF_NET_OFF), so it
does not depend on where the kernel left skb->data: the source port is at offset 0 and
the flags at 13 of the TCP header, after a 20-byte IPv4 or a 40-byte IPv6 header (no
IPv4 options or IPv6 extension headers on loopback). Linux only.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SKF_NET_OFF = -0x100000
_TH_SYN = 0x02

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}, BPF opcodes (linux/filter.h).
_LDH_ABS = 0x28
_LDB_ABS = 0x30
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06
_JA = 0x05


def _program(ports: Sequence[int], ip_header: int) -> list[tuple[int, int, int, int]]:
    """Drop (return 0) a segment from one of `ports` without SYN; accept the rest.

    Conditional jumps reach at most 255 instructions ahead, so each port's test jumps
    over one unconditional `ja` (32-bit offset) to the flags test on a match:

        ldh sport; (jeq port_i ? next : skip; ja FLAGS) x n; ret ACCEPT;
        FLAGS: ldb flags; jset SYN ? ACCEPT : next; ret 0; ACCEPT: ret -1
    """
    base = SKF_NET_OFF + ip_header
    n = len(ports)
    ins: list[tuple[int, int, int, int]] = [(_LDH_ABS, 0, 0, (base + 0) & 0xFFFFFFFF)]
    for i, port in enumerate(ports):
        ins.append((_JEQ_K, 0, 1, port))
        ins.append((_JA, 0, 0, 2 * n - 2 * i - 1))
    ins += [
        (_RET_K, 0, 0, 0xFFFFFFFF),
        (_LDB_ABS, 0, 0, (base + 13) & 0xFFFFFFFF),
        (_JSET_K, 1, 0, _TH_SYN),
        (_RET_K, 0, 0, 0),
        (_RET_K, 0, 0, 0xFFFFFFFF),
    ]
    return ins


def attach(listener: socket.socket, ports: Sequence[int]) -> None:
    if not ports:
        raise ValueError("no ports to hold")
    ip_header = 40 if listener.family == socket.AF_INET6 else 20
    ins = _program(ports, ip_header)
    code = b"".join(struct.pack("=HBBI", *i) for i in ins)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter}: native layout.
    fprog = struct.pack("HP", len(ins), ctypes.addressof(buf))
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def detach(listener: socket.socket) -> None:
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except OSError:
        pass  # ENOENT: no filter attached any more


@contextmanager
def holding_acks(listener: socket.socket, ports: Sequence[int]) -> Iterator[None]:
    """While the block runs, final ACKs (any non-SYN segment) from `ports` never reach
    `listener`; afterwards they do again."""
    attach(listener, ports)
    try:
        yield
    finally:
        detach(listener)
