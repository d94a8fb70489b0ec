"""What the ephemeral experiments share: a private block of free ports, destinations to
connect to, and clients that leave no trace.

Each experiment narrows its client sockets to its own block of `ports` consecutive ports
with IP_LOCAL_PORT_RANGE, chosen inside net.ipv4.ip_local_port_range where no TCP socket
of this namespace holds a port (in any state, TIME_WAIT included) and none is reserved.
Exhaustion then takes a handful of connects, and no other program is ever short of a port.
A block is only free when chosen: another program's bind() or connect() could take a port
of it in the next millisecond. Every port an experiment counts is therefore checked to lie
in its block, so a foreign socket can only make a count smaller, never invent one.
"""

from __future__ import annotations

import errno
import random
import socket
from dataclasses import dataclass, field

from sockprobe.kernel import ephemeral, sockstate
from sockprobe.lab import Lab, cannot_run
from sockprobe.report import NA
from sockprobe.status import oserror_name

#: Blocks tried at random positions before giving up on finding a free one.
TRIES = 500


@dataclass
class Ports:
    """The namespace's range, what holds it now, and the blocks handed out so far."""

    lo: int
    hi: int
    held: set[int]
    reserved: set[int]
    handed: set[int] = field(default_factory=set)
    #: Why per-socket ranges cannot be used here (IP_LOCAL_PORT_RANGE refused), if so.
    na: NA | None = None

    def block(self, n: int) -> tuple[int, int] | NA:
        """A block of n consecutive free ports inside the range (or why there is none)."""
        if self.na is not None:
            return self.na
        busy = self.held | self.reserved | self.handed
        top = self.hi - n + 1
        if top < self.lo:
            return NA(f"ip_local_port_range {self.lo}-{self.hi} is narrower than {n} ports")
        rng = random.Random()
        for _ in range(TRIES):
            start = rng.randint(self.lo, top)
            if not any(p in busy for p in range(start, start + n)):
                self.handed.update(range(start, start + n))
                return start, start + n - 1
        return NA(f"no {n} consecutive free ports in ip_local_port_range {self.lo}-{self.hi}")


def client(lab: Lab, block: tuple[int, int] | None) -> socket.socket:
    """A TCP socket for the lab host, narrowed to `block` if given."""
    s = lab.open_socket()
    if block is not None:
        ephemeral.narrow(s, *block)
    return s


def connect(lab: Lab, s: socket.socket, dest: socket.socket) -> str:
    """connect() to a listener; "ok" or the errno name. A failed socket is closed."""
    s.settimeout(lab.deadline.timeout(5.0, "connecting"))
    try:
        s.connect(dest.getsockname())
    except OSError as exc:
        lab.close(s)
        return oserror_name(exc)
    s.settimeout(None)
    return "ok"


def bind0(lab: Lab, s: socket.socket) -> str:
    """bind() to the lab host with port 0; "ok" or the errno name (the socket is closed)."""
    try:
        s.bind(lab.host.sockaddr(0))
    except OSError as exc:
        lab.close(s)
        return oserror_name(exc)
    return "ok"


def abort_all(lab: Lab, socks: list[socket.socket]) -> None:
    """Close with SO_LINGER {1, 0}: an RST instead of a FIN, so no TIME_WAIT is left
    (socket(7)) and the block's ports are free again at once."""
    for s in socks:
        try:
            sockstate.abortive_linger(s)
        except OSError:
            pass
        lab.close(s)
    socks.clear()


def in_block(s: socket.socket, block: tuple[int, int]) -> bool:
    port = s.getsockname()[1]
    return block[0] <= int(port) <= block[1]


def out_of_descriptors(lab: Lab, exc: OSError) -> None:
    """Raise the cannot-run error (exit 3) for EMFILE/ENFILE: with no descriptor left the
    experiment's counts would describe RLIMIT_NOFILE, not the port range. Any other
    error stays the caller's (an option this kernel lacks makes its rows n/a)."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        reason = cannot_run(exc, lab.host)
        if reason is not None:
            raise reason from None
