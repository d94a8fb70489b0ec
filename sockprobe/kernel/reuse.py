"""Linux socket options behind `sockprobe reuseaddr` that Python's socket module does not name.

- `steer_reuseport_by_dscp(listener)`: attach a four-instruction classic BPF program to a
  SO_REUSEPORT group (socket(7), SO_ATTACH_REUSEPORT_CBPF) that sends each new connection
  to listener 0 or 1 according to one DSCP bit of its SYN. Without it the kernel spreads
  connections by a hash of the 4-tuple, and ephemeral client ports make that split differ
  from run to run; with it, the probe decides which listener each client queues on, so the
  "how many were reset" count is the same in every run.
- `mark_client(sock, group)`: set that DSCP bit (IP_TOS / IPV6_TCLASS, no privilege needed;
  SO_MARK would need CAP_NET_ADMIN).
- `pin_local_port_range(sock, port)`: IP_LOCAL_PORT_RANGE (Linux >= 6.3) narrows the
  ephemeral range of one socket to a single port, so that connect() must pick exactly that
  port through the kernel's own port selection: the only path on which net.ipv4.tcp_tw_reuse
  is consulted (an explicit bind() + connect() never asks it).

Every function raises OSError when the kernel refuses (or off Linux, ENOPROTOOPT); the
probe turns that into an `n/a` with the reason.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys

IS_LINUX = sys.platform.startswith("linux")

#: include/uapi/asm-generic/socket.h
SO_ATTACH_REUSEPORT_CBPF = 51
#: include/uapi/linux/in.h (Linux 6.3+); the value is `low | high << 16`.
IP_LOCAL_PORT_RANGE = 51
#: The DSCP bit used to steer: TOS/traffic class 0x20 is DSCP CS1 ("lower effort").
STEER_TOS = 0x20

# Classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h).
_LD_B_ABS = 0x30  # A = packet byte at k
_ALU_RSH_K = 0x74  # A >>= k
_ALU_AND_K = 0x54  # A &= k
_RET_A = 0x16  # return A
#: Negative offsets address the network header instead of the data pointer, which for a
#: reuseport program sits past the TCP header (filter.h SKF_NET_OFF).
_SKF_NET_OFF = -0x100000 & 0xFFFFFFFF
_INSN = struct.Struct("=HBBI")


def _unsupported(what: str) -> OSError:
    return OSError(errno.ENOPROTOOPT, f"{what} exists only on Linux")


def _steer_program(family: int) -> list[tuple[int, int, int, int]]:
    """The group index (0 or 1) is one bit of the SYN's TOS / traffic class.

    IPv4: byte 1 of the header is the TOS; bit 5 is 0x20.
    IPv6: the traffic class straddles bytes 0 and 1 (version:4, class:8); class bit 0x20
    is bit 1 of byte 0.
    """
    if family == socket.AF_INET6:
        offset, shift = 0, 1
    else:
        offset, shift = 1, 5
    return [
        (_LD_B_ABS, 0, 0, _SKF_NET_OFF + offset),
        (_ALU_RSH_K, 0, 0, shift),
        (_ALU_AND_K, 0, 0, 1),
        (_RET_A, 0, 0, 0),
    ]


def steer_reuseport_by_dscp(listener: socket.socket) -> None:
    """Make the listener's SO_REUSEPORT group pick listener 1 for SYNs marked with
    `mark_client(..., 1)` and listener 0 for the others (socket(7): listeners are
    numbered in the order they called listen())."""
    if not IS_LINUX:
        raise _unsupported("SO_ATTACH_REUSEPORT_CBPF")
    insns = _steer_program(listener.family)
    code = ctypes.create_string_buffer(b"".join(_INSN.pack(*i) for i in insns))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: native
    # alignment puts the pointer after padding; the kernel copies the program at once,
    # so the buffer only has to outlive this call.
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(code))
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def mark_client(sock: socket.socket, group: int) -> None:
    """Mark the connection's packets (its SYN included) for listener `group` (0 or 1)."""
    tos = STEER_TOS if group else 0
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def pin_local_port_range(sock: socket.socket, port: int) -> None:
    """Restrict the socket's ephemeral port range to exactly `port` (IP_LOCAL_PORT_RANGE).

    The option lives at the IPPROTO_IP level for IPv6 sockets too."""
    if not IS_LINUX:
        raise _unsupported("IP_LOCAL_PORT_RANGE")
    sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("=I", port | port << 16))
