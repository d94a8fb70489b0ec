"""Is the ephemeral port range exhausted, and how many of its ports are in use?

connect() on an unbound socket, and bind() to port 0, take a local port from
net.ipv4.ip_local_port_range (per network namespace; net.ipv4.ip_local_reserved_ports
are skipped). When no port of the range is free for the destination, connect() fails with
EADDRNOTAVAIL ("Cannot assign requested address") and bind(port 0) with EADDRINUSE
(`inet_hash_connect()`/`__inet_hash_connect()` and `inet_csk_find_open_port()` in
net/ipv4/inet_hashtables.c and inet_connection_sock.c).

A port counts as in use here when some TCP socket of this network namespace (any state,
TIME_WAIT included) has it as its local port, from /proc/net/tcp and /proc/net/tcp6.
(A socket bound but not listening is missing from those files, so it is not counted.)
That is what bind(port 0) must avoid; connect() may still share a port between different
destinations, so "in use" is an upper bound on what connect() lacks, and the errno of
the failed call is the proof that it lacked one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EphemeralUse:
    low: int
    high: int
    #: Ports of the range that some TCP socket of this namespace holds as its local port.
    in_use: int
    #: Ports of the range listed in net.ipv4.ip_local_reserved_ports.
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
        """'the ephemeral port range 40000-40003 (4 ports) has 4 in use'."""
        res = f", {self.reserved} reserved" if self.reserved else ""
        return (
            f"the ephemeral port range {self.low}-{self.high} "
            f"(net.ipv4.ip_local_port_range, {self.size} ports) has {self.in_use} in use"
            f"{res} by TCP sockets of this network namespace"
        )


def port_range() -> tuple[int, int] | None:
    """net.ipv4.ip_local_port_range as (low, high), or None where it is not readable."""
    from sockprobe.kernel import sysctl

    raw = sysctl("net.ipv4.ip_local_port_range")
    if raw is None:
        return None
    try:
        low, high = (int(x) for x in raw.split()[:2])
    except ValueError:
        return None
    return low, high


def _reserved(low: int, high: int) -> int:
    from sockprobe.kernel import sysctl

    raw = (sysctl("net.ipv4.ip_local_reserved_ports") or "").strip()
    ports: set[int] = set()
    for part in filter(None, raw.split(",")):
        a, _, b = part.partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            continue
        ports.update(range(max(lo, low), min(hi, high) + 1))
    return len(ports)


def ephemeral_use() -> EphemeralUse | None:
    """How full the ephemeral range is now (None where the range is not readable).

    >>> use = ephemeral_use()
    >>> use is None or use.size > 0
    True
    """
    rng = port_range()
    if rng is None:
        return None
    low, high = rng
    from sockprobe.kernel import proc_net_sockets

    used: set[int] = set()
    for proto in ("tcp", "tcp6"):
        for row in proc_net_sockets(proto):
            port = row.local[1]
            if low <= port <= high:
                used.add(port)
    return EphemeralUse(low, high, len(used), _reserved(low, high))
