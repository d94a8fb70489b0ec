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

import os
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

from sockprobe.kernel import sockdiag

# include/uapi/linux/inet_diag.h: the request attribute carrying a filter program, and
# the two port comparisons every kernel with sock_diag understands (INET_DIAG_BC_S_EQ
# is newer, 4.16, so the pair ">= P, <= P" is used instead).
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
_BC_OP = struct.Struct("=BBH")  # code, yes, no: jump `yes` bytes on a match, `no` if not
#: struct inet_diag_msg in one piece: family, state, timer, retrans; the sockid (ports
#: in network order, read natively and swapped; addresses; interface and cookie
#: skipped); expires, rqueue, wqueue, uid, inode.
_MSG = struct.Struct("=BBBBHH16s16s12xIIIII")
_RTA = struct.Struct("=HH")
_AF_INET = socket.AF_INET

#: TCP states (1..12) plus the bound-inactive filter bit (13); UDP sockets use TCP's
#: numbers too: 7 (CLOSE) for an unconnected socket, 1 (ESTABLISHED) for a connected one.
TCP_STATES = sockdiag.ALL_STATES


class PortSocket(NamedTuple):
    """One socket on the port: kernel.sockdiag.DiagSocket's fields that `port` uses, as
    a tuple, which is several times cheaper to build than a frozen dataclass when a busy
    port has thousands of connections."""

    family: int
    protocol: int
    state: int
    local: tuple[str, int]
    remote: tuple[str, int]
    timer: int
    expires_ms: int
    rqueue: int
    wqueue: int
    uid: int
    inode: int
    #: INET_DIAG_SKV6ONLY (AF_INET6 sockets in LISTEN or CLOSE only); None when unknown.
    v6only: bool | None


def port_filter(port: int) -> bytes:
    """The inet_diag bytecode "local port == port", as an INET_DIAG_REQ_BYTECODE rtattr.

    Each comparison is two 4-byte ops: the test, then an op whose `no` field holds the
    port. The program matches a socket when execution runs exactly to its end; a jump
    past the end (len + 4) rejects it. The kernel audits these offsets
    (inet_diag_bc_audit) and answers EINVAL to a malformed program.
    """
    prog = (
        _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20)  # >= P: next test, else past the end
        + _BC_OP.pack(0, 0, port)
        + _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12)  # <= P: to the end (match), else reject
        + _BC_OP.pack(0, 0, port)
    )
    return struct.pack("=HH", 4 + len(prog), INET_DIAG_REQ_BYTECODE) + prog


def _request(family: int, protocol: int, states: int, port: int, seq: int) -> bytes:
    sockid = sockdiag._SOCKID.pack(0, 0, b"\0" * 16, b"\0" * 16) + struct.pack("=III", 0, 0, 0)
    body = sockdiag._REQ.pack(family, protocol, 0, 0, states) + sockid + port_filter(port)
    flags = sockdiag.NLM_F_REQUEST | sockdiag.NLM_F_DUMP
    head = sockdiag._NLMSGHDR.pack(
        sockdiag._NLMSGHDR.size + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, flags, seq, 0
    )
    return head + body


def diag_port(family: int, protocol: int, port: int, timeout: float = 2.0) -> list[PortSocket]:
    """Every socket of one family and protocol whose local port is `port` (sock_diag).

    Raises OSError when sock_diag cannot answer (no netlink, module missing, EPERM).
    """
    states = TCP_STATES if protocol == socket.IPPROTO_TCP else 0xFFFFFFFF
    out: list[PortSocket] = []
    hdr = sockdiag._NLMSGHDR
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(timeout)
        nl.sendto(_request(family, protocol, states, port, 1), (0, 0))
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return out
            off = 0
            while off + hdr.size <= len(data):
                length, mtype, _flags, _seq, _pid = hdr.unpack_from(data, off)
                if length < hdr.size or mtype == sockdiag.NLMSG_DONE:
                    return out
                if mtype == sockdiag.NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + hdr.size)
                    if code:
                        raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
                    return out
                msg = _parse(data, off + hdr.size, off + length, protocol)
                # The kernel already filtered on the port; checking again costs nothing
                # and guards against a kernel that ignored the filter attribute.
                if msg.local[1] == port:
                    out.append(msg)
                off += (length + 3) & ~3


def _parse(data: bytes, start: int, end: int, protocol: int) -> PortSocket:
    """One inet_diag_msg and the INET_DIAG_SKV6ONLY attribute, if present.

    kernel.sockdiag has the general parser; this one unpacks the fixed part with one
    struct call, which matters on a port with thousands of connections.
    """
    family, state, timer, _r, sport, dport, src, dst, expires, rq, wq, uid, inode = (
        _MSG.unpack_from(data, start)
    )
    if family == _AF_INET:
        local = socket.inet_ntop(_AF_INET, src[:4])
        remote = socket.inet_ntop(_AF_INET, dst[:4])
    else:
        local = socket.inet_ntop(family, src)
        remote = socket.inet_ntop(family, dst)
    v6only: bool | None = None
    # INET_DIAG_SKV6ONLY comes only for AF_INET6 sockets in LISTEN or CLOSE; the other
    # attributes every socket carries (shutdown, cgroup, sockopt) are not needed.
    off = start + _MSG.size if family != _AF_INET and state in (7, 10) else end
    while off + 4 <= end:
        alen, atype = _RTA.unpack_from(data, off)
        if alen < 4:
            break
        if atype == sockdiag.INET_DIAG_SKV6ONLY and alen > 4:
            v6only = bool(data[off + 4])
        off += (alen + 3) & ~3
    return PortSocket(
        family,
        protocol,
        state,
        (local, socket.ntohs(sport)),
        (remote, socket.ntohs(dport)),
        timer,
        expires,
        rq,
        wq,
        uid,
        inode,
        v6only,
    )


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
