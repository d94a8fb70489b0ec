"""What udp-truncate's experiments share: the payload pattern, the arrival wait, the
deadline rule for timeouts, the n/a reasons."""

from __future__ import annotations

import socket

from sockprobe.kernel import udp
from sockprobe.lab import Deadline, Lab
from sockprobe.status import DeadlineExceeded

#: How long to wait for a datagram that was sent on loopback and should be there at once
#: (loopback delivery happens inside the sender's send() call); a miss is reported.
ARRIVAL_CAP = 2.0
NO_MSG_TRUNC = "MSG_TRUNC as a recv() input flag (real datagram length) is Linux-only"
NO_PROC = "/proc/net/udp drops (per socket) exist only on Linux"
NO_RXQ_OVFL = "SO_RXQ_OVFL (per-socket drop count as ancillary data) is Linux-only"
NO_COUNTERS = "the UDP counters of /proc/net/snmp exist only on Linux"


def counter_group(family: int) -> str:
    """The counter group: Udp in /proc/net/snmp, Udp6 in /proc/net/snmp6."""
    return "Udp6" if family == socket.AF_INET6 else "Udp"


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from any shifted copy of themselves for small shifts:
    byte i is (i * 7 + seed) mod 251 (251 is prime, so the cycle is 251 bytes long,
    longer than any header shift a bug could introduce)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    reps = size // 251 + 1
    return (block * reps)[:size]


def wait_for(lab: Lab, cap: float, doing: str) -> float:
    """Seconds a receive may block: at most `cap`, never past the deadline."""
    return lab.deadline.timeout(cap, doing)


def timed_out(deadline: Deadline, wanted: float, given: float, doing: str) -> None:
    """A TimeoutError is a result only if the whole wait was granted; if the deadline
    shortened it, the deadline is what ran out."""
    if given < wanted:
        raise DeadlineExceeded(f"--deadline {deadline.seconds:g} s ran out while {doing}")


def udp_counter(family: int, name: str) -> int | None:
    """One UDP counter of this network namespace (Udp or Udp6), None off Linux."""
    return udp.udp_counters(family).get(name)


def n(v: int) -> str:
    return f"{v:,}"
