"""The ephemeral port range: its settings, per-socket narrowing, and who holds it now.

- `local_port_range()` and `reserved_ports()`: net.ipv4.ip_local_port_range (per network
  namespace) and net.ipv4.ip_local_reserved_ports (a list like "8080,9000-9010"), which
  automatic port choice skips (inet_is_local_reserved_port()).
- `narrow(sock, lo, hi)`: IP_LOCAL_PORT_RANGE (Linux 6.3+, include/uapi/linux/in.h 51),
  the per-socket range, value `lo | hi << 16`. inet_sk_get_local_port_range() takes each
  bound that lies inside the namespace's range, so a block inside it gives one socket a
  private range of a few ports without touching the host's setting. It also turns the
  parity split off for that socket (`step = local_ports ? 1 : 2` in __inet_hash_connect()
  and inet_csk_find_open_port(), Linux 6.8+).
- `bind_no_port(sock)`: IP_BIND_ADDRESS_NO_PORT (Linux 4.2+, 24): bind() to an address
  with port 0 takes no port; connect() picks it later with the 4-tuple known, so ports
  are shared between destinations as for a plain connect().
- `ephemeral_use()`: is the range exhausted, and how many of its ports are held now.
- `held_ports(family)`: the local ports of every TCP socket in every state (TIME_WAIT and
  bound-but-inactive included), from sock_diag.

Functions that set options raise OSError where the kernel refuses (ENOPROTOOPT on an
older kernel or off Linux); the probe turns that into an n/a with the reason.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import sockdiag

IS_LINUX = sys.platform.startswith("linux")

#: include/uapi/linux/in.h
IP_BIND_ADDRESS_NO_PORT = 24
IP_LOCAL_PORT_RANGE = 51


def local_port_range() -> tuple[int, int] | None:
    """(low, high) of net.ipv4.ip_local_port_range, both included; None if unreadable."""
    raw = kernel.sysctl("net.ipv4.ip_local_port_range")
    if raw is None:
        return None
    parts = raw.split()
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def reserved_ports() -> set[int]:
    """net.ipv4.ip_local_reserved_ports: "8080,9000-9002" -> {8080, 9000, 9001, 9002}."""
    raw = kernel.sysctl("net.ipv4.ip_local_reserved_ports") or ""
    out: set[int] = set()
    for part in raw.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return out


def narrow(sock: socket.socket, lo: int, hi: int) -> None:
    """Restrict the socket's automatic port choice to lo..hi (IP_LOCAL_PORT_RANGE). The
    option lives at the IPPROTO_IP level for IPv6 sockets too."""
    if not IS_LINUX:
        raise OSError(errno.ENOPROTOOPT, "IP_LOCAL_PORT_RANGE exists only on Linux")
    sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("=I", lo | hi << 16))


def bind_no_port(sock: socket.socket) -> None:
    """IP_BIND_ADDRESS_NO_PORT: a later bind((addr, 0)) leaves the port to connect()."""
    if not IS_LINUX:
        raise OSError(errno.ENOPROTOOPT, "IP_BIND_ADDRESS_NO_PORT exists only on Linux")
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)


def all_tcp() -> list[sockdiag.DiagSocket]:
    """Every TCP socket of this network namespace, both families, every state.

    Raises OSError where sock_diag is unavailable."""
    out = sockdiag.dump(socket.AF_INET, meminfo=False)
    try:
        out += sockdiag.dump(socket.AF_INET6, meminfo=False)
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.ENOENT, errno.EINVAL):
            raise  # no IPv6 in this kernel: the IPv4 dump is the whole answer
    return out


@dataclass(frozen=True)
class EphemeralUse:
    """How full the ephemeral range is: is it exhausted, and how many of its ports are
    held (for the host check and for a probe that ran out of ports)."""

    low: int
    high: int
    #: Ports of the range that some TCP socket of this namespace holds as its local port
    #: (any state: TIME_WAIT and bound-but-inactive included, from sock_diag).
    in_use: int
    #: Ports of the range listed in net.ipv4.ip_local_reserved_ports (and not in use).
    reserved: int = 0

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    @property
    def free(self) -> int:
        return max(0, self.size - self.in_use - self.reserved)

    @property
    def exhausted(self) -> bool:
        return self.free == 0

    def describe(self) -> str:
        """'the ephemeral port range 40000-40003 (net.ipv4.ip_local_port_range, 4 ports)
        has 4 in use by TCP sockets of this network namespace'."""
        res = f", {self.reserved} reserved" if self.reserved else ""
        return (
            f"the ephemeral port range {self.low}-{self.high} "
            f"(net.ipv4.ip_local_port_range, {self.size} ports) has {self.in_use} in use"
            f"{res} by TCP sockets of this network namespace"
        )


def ephemeral_use() -> EphemeralUse | None:
    """The range and how many of its ports are held now; None where the range or the
    sockets cannot be read. connect() may still share a held port between different
    destinations, so `in_use` is what bind(port 0) must avoid and an upper bound on what
    connect() lacks; the errno of a failed call is the proof that it lacked one."""
    rng = local_port_range()
    if rng is None:
        return None
    low, high = rng
    try:
        sockets = all_tcp()
    except OSError:
        return None
    used = {s.local[1] for s in sockets if low <= s.local[1] <= high}
    reserved = {p for p in reserved_ports() if low <= p <= high} - used
    return EphemeralUse(low, high, len(used), len(reserved))
