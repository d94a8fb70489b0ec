"""What a new socket gets from the settings, measured with getsockopt() on fresh sockets.

Reading /proc/sys says what the kernel was told; these checks show what it does with it:
the default buffers of TCP and UDP sockets, what a buffer request above rmem_max and
wmem_max reads back (socket(7): capped, then doubled for bookkeeping overhead), the
congestion control and IPV6_V6ONLY a socket starts with, where bind(port 0) lands, which
options a loopback handshake negotiated, whether a non-local address can be bound, and
how many datagrams a UNIX datagram socket queues. Every value is deterministic, so
`sockprobe diff` compares them exactly.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from sockprobe.kernel import rules, tcpopts
from sockprobe.lab import Lab, pair_or_unsupported
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import errno_name

INT_MAX = 2**31 - 1
#: TEST-NET-1 (RFC 5737): documentation addresses no interface should have.
NONLOCAL_ADDR = "192.0.2.1"
#: A 1-byte datagram's skb costs well under this much of the sender's SO_SNDBUF; the
#: queue-length check runs only where the buffer holds that many datagrams.
DGRAM_COST = 2048


@dataclass
class Check:
    id: str
    what: str
    measured: Cell
    expected: Cell
    setting: str = ""

    @property
    def agrees(self) -> bool | None:
        if isinstance(self.measured, NA) or isinstance(self.expected, NA):
            return None
        return self.measured == self.expected


def _opt(s: socket.socket, level: int, name: int) -> int:
    return int(s.getsockopt(level, name))


def _missing(name: str) -> NA:
    return NA(f"{name}: {rules.absent_reason(name)}")


def measure(lab: Lab, st: rules.Settings) -> list[Check]:
    out: list[Check] = []

    def expect(name: str, index: int = 0) -> Cell:
        v = st.ints(name)
        return v[index] if len(v) > index else _missing(name)

    tcp = lab.open_socket(socket.SOCK_STREAM)
    udp = lab.open_socket(socket.SOCK_DGRAM)
    sol = socket.SOL_SOCKET
    for cid, what, sock, opt, name, idx in (
        ("tcp_rcvbuf", "new TCP socket: SO_RCVBUF", tcp, socket.SO_RCVBUF, "net.ipv4.tcp_rmem", 1),
        ("tcp_sndbuf", "new TCP socket: SO_SNDBUF", tcp, socket.SO_SNDBUF, "net.ipv4.tcp_wmem", 1),
        (
            "udp_rcvbuf",
            "new UDP socket: SO_RCVBUF",
            udp,
            socket.SO_RCVBUF,
            "net.core.rmem_default",
            0,
        ),
        (
            "udp_sndbuf",
            "new UDP socket: SO_SNDBUF",
            udp,
            socket.SO_SNDBUF,
            "net.core.wmem_default",
            0,
        ),
    ):
        out.append(Check(cid, what, _opt(sock, sol, opt), expect(name, idx), name))
    # socket(7): a SO_RCVBUF/SO_SNDBUF request is capped at rmem_max/wmem_max (even for
    # root; only SO_RCVBUFFORCE bypasses it), then doubled (sock_setsockopt).
    for cid, opt, cap_name, label in (
        ("rcvbuf_cap", socket.SO_RCVBUF, "net.core.rmem_max", "SO_RCVBUF"),
        ("sndbuf_cap", socket.SO_SNDBUF, "net.core.wmem_max", "SO_SNDBUF"),
    ):
        cap = st.int(cap_name)
        ask = min(2 * cap, INT_MAX) if cap is not None else 1 << 24
        udp.setsockopt(sol, opt, ask)
        want: Cell = 2 * min(ask, cap, INT_MAX // 2) if cap is not None else _missing(cap_name)
        short = cap_name.rsplit(".", 1)[1]
        out.append(
            Check(cid, f"{label} after asking for 2 x {short}", _opt(udp, sol, opt), want, cap_name)
        )
    cc = getattr(socket, "TCP_CONGESTION", None)
    if cc is not None:
        got = tcp.getsockopt(socket.IPPROTO_TCP, cc, 16).split(b"\0")[0].decode()
        name = "net.ipv4.tcp_congestion_control"
        want_cc = st.text(name)
        out.append(
            Check(
                "tcp_congestion",
                "new TCP socket: TCP_CONGESTION",
                got,
                want_cc or _missing(name),
                name,
            )
        )
    name = "net.ipv6.bindv6only"
    try:
        v6 = lab.open_socket(socket.SOCK_STREAM, family=socket.AF_INET6)
        got6: Cell = _opt(v6, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        lab.close(v6)
    except OSError as exc:  # no IPv6 in this kernel or namespace
        got6 = NA(f"no IPv6 socket here: {errno_name(exc.errno)}")
    out.append(Check("ipv6_v6only", "new IPv6 socket: IPV6_V6ONLY", got6, expect(name), name))
    out.append(_bind_port_zero(lab, st))
    out.extend(_negotiated(lab, st))
    out.append(_nonlocal_bind(lab, st))
    out.append(_unix_dgram_queue(lab, st))
    for s in (tcp, udp):
        lab.close(s)
    return out


def _bind_port_zero(lab: Lab, st: rules.Settings) -> Check:
    name = "net.ipv4.ip_local_port_range"
    lohi = st.ints(name)
    probe = lab.open_socket(socket.SOCK_STREAM)
    probe.bind(lab.host.sockaddr(0))
    port = probe.getsockname()[1]
    lab.close(probe)
    what = "bind(port 0): port inside ip_local_port_range"
    if len(lohi) != 2:
        return Check("bind_port_zero", what, True, _missing(name), name)
    return Check("bind_port_zero", what, lohi[0] <= port <= lohi[1], True, name)


def _negotiated(lab: Lab, st: rules.Settings) -> list[Check]:
    """Options of a loopback handshake: both ends are this namespace, so an option is
    negotiated exactly when its setting offers it (tcp_syn_options, tcp_parse_options)."""
    c, s = pair_or_unsupported(lab, "the handshake options check", name="options")
    got = tcpopts.negotiated(c)
    lab.close(c)
    lab.close(s)
    out = []
    for cid, name, attr in (
        ("handshake_timestamps", "net.ipv4.tcp_timestamps", "timestamps"),
        ("handshake_sack", "net.ipv4.tcp_sack", "sack"),
        ("handshake_window_scaling", "net.ipv4.tcp_window_scaling", "window_scaling"),
    ):
        v = st.int(name)
        measured: Cell = NA("no TCP_INFO here") if got is None else bool(getattr(got, attr))
        want: Cell = _missing(name) if v is None else v != 0
        out.append(
            Check(
                cid, f"loopback handshake negotiated {attr.replace('_', ' ')}", measured, want, name
            )
        )
    return out


def _nonlocal_bind(lab: Lab, st: rules.Settings) -> Check:
    """bind() to an address no interface has: EADDRNOTAVAIL unless ip_nonlocal_bind
    (inet_bind -> inet_addr_valid_or_nonlocal in net/ipv4/af_inet.c)."""
    name = "net.ipv4.ip_nonlocal_bind"
    what = f"bind() to {NONLOCAL_ADDR} (an address no interface has)"
    s = lab.open_socket(socket.SOCK_STREAM, family=socket.AF_INET)
    try:
        s.bind((NONLOCAL_ADDR, 0))
        got: Cell = "bound"
    except OSError as exc:
        got = errno_name(exc.errno)
    finally:
        lab.close(s)
    v = st.int(name)
    want: Cell = _missing(name) if v is None else ("bound" if v else "EADDRNOTAVAIL")
    return Check("nonlocal_bind", what, got, want, name)


def _unix_dgram_queue(lab: Lab, st: rules.Settings) -> Check:
    """1-byte datagrams sent with sendto() to an unconnected UNIX datagram receiver until
    EAGAIN. unix_dgram_sendmsg() refuses when the receiver's queue holds more than
    sk_max_ack_backlog (max_dgram_qlen at its creation) datagrams and it is not connected
    back to the sender, so max_dgram_qlen + 1 fit, unless SO_SNDBUF fills first."""
    name = "net.unix.max_dgram_qlen"
    what = "datagrams an unconnected UNIX receiver queues"
    qlen = st.int(name)
    if not hasattr(socket, "AF_UNIX"):
        return Check("unix_dgram_queue", what, NA("no AF_UNIX here"), NA("no AF_UNIX here"), name)
    rx = lab.open_socket(socket.SOCK_DGRAM, family=socket.AF_UNIX)
    tx = lab.open_socket(socket.SOCK_DGRAM, family=socket.AF_UNIX)
    try:
        rx.bind(f"\0sockprobe-kernel-{id(rx)}")  # abstract namespace: no file left behind
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, INT_MAX // 2)
        room = _opt(tx, socket.SOL_SOCKET, socket.SO_SNDBUF) // DGRAM_COST
        limit = (qlen + 1) if qlen is not None else 0
        if qlen is not None and room < limit:
            na = NA(f"SO_SNDBUF holds about {room} datagrams, fewer than {limit}: it fills first")
            return Check("unix_dgram_queue", what, na, limit, name)
        tx.setblocking(False)
        sent = 0
        for _ in range(max(limit, 1) + 8):
            try:
                tx.sendto(b"x", rx.getsockname())
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                break
            sent += 1
        want: Cell = _missing(name) if qlen is None else limit
        return Check("unix_dgram_queue", what, sent, want, name)
    finally:
        lab.close(tx)
        lab.close(rx)


def add(report: Report, checks: list[Check]) -> None:
    t = report.table(
        "new_socket",
        "What a new socket gets (measured now, and what the settings predict)",
        [
            col("check"),
            col("what"),
            col("measured"),
            col("expected", "expected"),
            col("agrees"),
        ],
        keys=["check"],
    )
    for ch in checks:
        t.add(ch.id, ch.what, ch.measured, ch.expected, ch.agrees)


def findings(report: Report, checks: list[Check]) -> None:
    bad = [c for c in checks if c.agrees is False]
    compared = [c for c in checks if c.agrees is not None]
    if not checks:
        return
    if not bad:
        by = {c.id: c for c in checks}
        report.findings.append(
            f"All {len(compared)} new-socket checks agreed with the settings, e.g. a TCP "
            f"socket starts with SO_RCVBUF {_fmt(by['tcp_rcvbuf'].measured)} B and a UDP "
            f"socket with {_fmt(by['udp_rcvbuf'].measured)} B."
        )
        return
    report.findings.append(
        f"{len(bad)} of {len(compared)} new-socket checks disagreed with the settings: "
        + "; ".join(f"{c.what}: {_fmt(c.measured)}, expected {_fmt(c.expected)}" for c in bad)
        + "."
    )


def _fmt(v: Cell) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, NA):
        return "n/a"
    return str(v)
