"""The sockets on one port or one UNIX socket path, as this network namespace's kernel
lists them (Linux). Used by `sockprobe port`.

Internet sockets come from sock_diag(7) with a filter the kernel runs itself: the request
carries a small inet_diag bytecode program ("local port >= P and local port <= P", the
same filter `ss 'sport = :P'` sends), so a host with ten thousand sockets answers with the
handful on port P instead of streaming all of them to user space. The TCP dump asks for
every state plus the bound-inactive bit (see kernel.sockdiag), so a socket that is bound
but not listening, which /proc/net/tcp never lists, is found too; sock_diag also says
whether a `[::]` socket is IPV6_V6ONLY. Where netlink is refused (a sandbox, an old
kernel without udp_diag) the same rows are read from /proc/net/{tcp,tcp6,udp,udp6},
without those two answers.

Only the namespace this process runs in is visible, which is the right scope: a socket in
another network namespace (a container) never makes a bind here fail.

UNIX sockets come from /proc/net/unix (unix(7)), one row per socket::

    Num       RefCount Protocol Flags    Type St Inode Path
    0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/app.sock

Flags 0x10000 (__SO_ACCEPTCON) marks a listener, Type is SOCK_STREAM (1), SOCK_DGRAM (2)
or SOCK_SEQPACKET (5), St is the socket state (1 unconnected, 3 connected), and Path is
the name given to bind(), as given (it may be relative); an abstract name starts with @.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sockprobe.kernel import sockdiag

#: One socket on the port: the sock_diag record; the /proc fallback fills the same fields.
PortSocket = sockdiag.DiagSocket

#: TCP states (1..12) plus the bound-inactive filter bit (13); UDP sockets use TCP's
#: numbers too: 7 (CLOSE) for an unconnected socket, 1 (ESTABLISHED) for a connected one.
TCP_STATES = sockdiag.ALL_STATES


def diag_port(family: int, protocol: int, port: int, timeout: float = 2.0) -> list[PortSocket]:
    """Every socket of one family and protocol whose local port is `port` (sock_diag,
    filtered in the kernel). Raises OSError when sock_diag cannot answer (no netlink,
    module missing, EPERM)."""
    states = TCP_STATES if protocol == socket.IPPROTO_TCP else 0xFFFFFFFF
    return sockdiag.dump(family, protocol, states, port=port, meminfo=False, timeout=timeout)


def proc_port(proto: str, port: int) -> list[PortSocket]:
    """The same rows from /proc/net/<proto> (tcp, tcp6, udp, udp6), as PortSocket.

    What /proc cannot say is None: IPV6_V6ONLY. Bound-but-not-listening TCP sockets
    are simply absent, which the caller must say.
    """
    from sockprobe import kernel

    family = socket.AF_INET6 if proto.endswith("6") else socket.AF_INET
    protocol = socket.IPPROTO_TCP if proto.startswith("tcp") else socket.IPPROTO_UDP
    return [
        PortSocket(
            family=family,
            protocol=protocol,
            state=r.state,
            local=r.local,
            remote=r.remote,
            timer=r.timer,
            expires_ms=int(r.timer_s * 1000),
            rqueue=r.rx_queue,
            wqueue=r.tx_queue,
            uid=r.uid,
            inode=r.inode,
            v6only=None,
            drops=r.drops,
        )
        for r in kernel.proc_net_sockets(proto, port)
    ]


# -- AF_UNIX --------------------------------------------------------------------------------
SO_ACCEPTCON = 0x10000
UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
UNIX_STATES = {1: "UNCONNECTED", 2: "CONNECTING", 3: "CONNECTED", 4: "DISCONNECTING"}


@dataclass(frozen=True)
class UnixSocket:
    """One row of /proc/net/unix."""

    inode: int
    type: int
    state: int
    listening: bool
    path: str

    @property
    def type_name(self) -> str:
        return UNIX_TYPES.get(self.type, f"type {self.type}")

    @property
    def state_name(self) -> str:
        if self.listening:
            return "LISTEN"
        return UNIX_STATES.get(self.state, f"state {self.state}")


def unix_sockets(names: set[str]) -> list[UnixSocket]:
    """Rows of /proc/net/unix whose path is one of `names` (exact strings).

    A path with a space would be split by a naive `split()`, so the line is cut into
    seven fields and the rest, which is the path.
    """
    out: list[UnixSocket] = []
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split(None, 7)
                if len(parts) < 8 or parts[7] not in names:
                    continue
                out.append(
                    UnixSocket(
                        inode=int(parts[6]),
                        type=int(parts[4], 16),
                        state=int(parts[5], 16),
                        listening=bool(int(parts[3], 16) & SO_ACCEPTCON),
                        path=parts[7],
                    )
                )
    except OSError:
        return out
    return out


# -- privileges and port settings ---------------------------------------------------------
CAP_NET_BIND_SERVICE = 10


def has_capability(bit: int) -> bool | None:
    """Whether this process has capability `bit` in its effective set (capabilities(7)),
    from the CapEff mask in /proc/self/status; None where that cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def in_port_list(spec: str, port: int) -> bool:
    """Whether `port` is in a list such as ip_local_reserved_ports: "8080,9000-9010"."""
    for part in spec.replace(" ", ",").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            if int(lo) <= port <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False
