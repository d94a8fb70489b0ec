"""sockprobe kernel: the kernel settings that shape the other probes' results, here.

Each setting is read from /proc/sys (the network namespace this process runs in: most
net.* settings are per namespace, which is why a container can differ from its host) and
shown with its value, what it changes, what the value means here, and the probe that
shows the behaviour. A setting this kernel does not have reads `n/a`.

The module is not called kernel.py so it is never confused with the `sockprobe.kernel`
package; the command and registry name are `kernel`.

Reading a file says what the kernel was told, not what it does, so two small
measurements run alongside (skip them with --no-measure):

- what a new socket gets: default SO_RCVBUF/SO_SNDBUF of TCP and UDP sockets, what a
  request above rmem_max/wmem_max reads back, TCP_CONGESTION, IPV6_V6ONLY, and where
  bind(port 0) lands. All deterministic, so `sockprobe diff` compares them exactly;
- the timers: an orphaned FIN_WAIT2 socket (closed here, peer still open) and the
  TIME_WAIT socket it becomes once the peer closes, read from /proc/net/tcp, and the RTO
  of a fresh loopback connection (TCP_INFO). This is what shows that tcp_fin_timeout
  sets FIN_WAIT2's lifetime, not TIME_WAIT's. It leaves one TIME_WAIT socket on an
  ephemeral loopback port for 60 s, as any client that closes first does.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.probes import ProbeParams, Stopwatch
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict

MISSING = "not in /proc/sys here (absent on this kernel or in this network namespace)"
NOT_LINUX = "no /proc/sys on this platform"
#: Linux keeps TIME_WAIT for TCP_TIMEWAIT_LEN (include/net/tcp.h), compiled in, not a sysctl.
TIMEWAIT_LEN_S = 60.0
#: /proc/net/tcp timers are printed in clock ticks and read a moment after the state change.
TIMER_SLACK_S = 1.0
INT_MAX = 2**31 - 1

#: (value, every raw value by name) -> what the value means on this host.
Reading = Callable[[str, dict[str, str | None]], str]


@dataclass(frozen=True)
class Setting:
    name: str
    unit: str
    changes: str
    shown_by: str
    reading: Reading


def _ints(v: str) -> list[int]:
    try:
        return [int(x) for x in v.split()]
    except ValueError:
        return []


def _choice(table: dict[str, str]) -> Reading:
    return lambda v, _all: table.get(v.strip(), f"{v}: see ip-sysctl.rst")


def _syn_backlog(v: str, every: dict[str, str | None]) -> str:
    cookies = (every.get("net.ipv4.tcp_syncookies") or "").strip()
    if cookies == "0":
        return f"syncookies off: unproven SYNs are dropped once 3/4 of {v} requests wait"
    return "no effect while syncookies are on: the listen() backlog bounds half-open requests"


def _port_range(v: str, _all: dict[str, str | None]) -> str:
    lohi = _ints(v)
    if len(lohi) != 2:
        return v
    return f"{lohi[1] - lohi[0] + 1:,} ports ({lohi[0]}-{lohi[1]})"


def reserved_ports(v: str) -> int:
    """Count the ports in an ip_local_reserved_ports list: '8080,9000-9009' -> 11."""
    n = 0
    for part in v.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            n += (int(hi) if hi else int(lo)) - int(lo) + 1
        except ValueError:
            continue
    return n


def _reserved(v: str, _all: dict[str, str | None]) -> str:
    n = reserved_ports(v)
    return "none reserved" if n == 0 else f"{n:,} ports skipped by bind(0) and connect()"


def _triple(kind: str) -> Reading:
    def reading(v: str, _all: dict[str, str | None]) -> str:
        t = _ints(v)
        if len(t) != 3:
            return v
        return f"new TCP sockets start at {t[1]:,} B, {kind} autotuning up to {t[2]:,} B"

    return reading


def _udp_mem(v: str, _all: dict[str, str | None]) -> str:
    t = _ints(v)
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    if len(t) != 3:
        return v
    mib = [x * page / 2**20 for x in t]
    return f"all UDP sockets together: pressure at {mib[1]:,.0f} MiB, max {mib[2]:,.0f} MiB"


def _bytes(template: str, factor: int = 1) -> Reading:
    def reading(v: str, _all: dict[str, str | None]) -> str:
        t = _ints(v)
        return template.format(t[0] * factor) if len(t) == 1 else v

    return reading


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "net.core.somaxconn",
        "",
        "upper bound on every listen() backlog",
        "backlog",
        lambda v, _a: f"listen(n) is clamped to {v}; Linux admits the clamped value + 1",
    ),
    Setting(
        "net.ipv4.tcp_max_syn_backlog",
        "",
        "limit on half-open (SYN_RECV) requests",
        "backlog",
        _syn_backlog,
    ),
    Setting(
        "net.ipv4.tcp_syncookies",
        "",
        "answer SYNs with cookies instead of queueing them",
        "backlog",
        _choice(
            {
                "0": "off: SYNs beyond the request queue are dropped",
                "1": "only when a listener's SYN queue overflows",
                "2": "for every SYN",
            }
        ),
    ),
    Setting(
        "net.ipv4.tcp_abort_on_overflow",
        "",
        "what a full accept queue does to a completing handshake",
        "backlog",
        _choice(
            {
                "0": "its final ACK is ignored; the SYN-ACK is resent, and a later ACK "
                "completes the handshake if the queue has room by then",
                "1": "reset (SYNs meeting a full queue are still dropped)",
            }
        ),
    ),
    Setting(
        "net.ipv4.tcp_syn_retries",
        "",
        "SYN retransmissions before connect() fails (ETIMEDOUT)",
        "backlog, timeouts",
        lambda v, _a: f"{v} retransmissions of an unanswered SYN",
    ),
    Setting(
        "net.ipv4.tcp_syn_linear_timeouts",
        "",
        "SYN retransmission timeouts that stay at the initial RTO before doubling",
        "backlog",
        lambda v, _a: f"the first {v} SYN timeouts do not grow; later ones double",
    ),
    Setting(
        "net.ipv4.tcp_fin_timeout",
        "s",
        "how long an orphaned socket waits in FIN_WAIT2 for the peer's FIN",
        "kernel (timers), reuseaddr",
        lambda v, _a: f"FIN_WAIT2 ends after {v} s; TIME_WAIT is not this setting",
    ),
    Setting(
        "net.ipv4.tcp_tw_reuse",
        "",
        "lets connect() reuse a local port in TIME_WAIT (never bind())",
        "reuseaddr",
        _choice(
            {
                "0": "off",
                "1": "on for every outgoing connection",
                "2": "on for loopback connections only",
            }
        ),
    ),
    Setting(
        "net.ipv4.tcp_tw_reuse_delay",
        "ms",
        "age a TIME_WAIT socket needs before tcp_tw_reuse may take its port",
        "reuseaddr",
        lambda v, _a: f"reusable once its last received segment is {v} ms old",
    ),
    Setting(
        "net.ipv4.tcp_migrate_req",
        "",
        "closing one SO_REUSEPORT listener moves its queued clients to another",
        "reuseaddr",
        _choice(
            {
                "0": "off: the closed listener's queued clients are reset",
                "1": "on: queued clients move to a listener still open",
            }
        ),
    ),
    Setting(
        "net.ipv4.tcp_autocorking",
        "",
        "holds small writes while earlier data waits in the qdisc or device queue",
        "nagle",
        _choice({"0": "off", "1": "on"}),
    ),
    Setting(
        "net.ipv4.tcp_congestion_control",
        "",
        "congestion control of new TCP connections (how cwnd grows)",
        "nagle",
        lambda v, _a: f"new connections use {v}",
    ),
    Setting(
        "net.ipv4.tcp_available_congestion_control",
        "",
        "congestion control algorithms loaded in this kernel",
        "nagle",
        lambda v, _a: f"{len(v.split())} loaded",
    ),
    Setting(
        "net.ipv4.tcp_allowed_congestion_control",
        "",
        "algorithms an unprivileged TCP_CONGESTION may choose",
        "nagle",
        lambda v, _a: f"{len(v.split())} allowed without CAP_NET_ADMIN",
    ),
    Setting(
        "net.ipv4.tcp_rto_min_us",
        "µs",
        "floor on the retransmission timeout (RTO)",
        "kernel (timers)",
        lambda v, _a: (
            f"no RTO below {int(v) / 1000:g} ms unless a route or socket option sets another"
            if v.isdigit()
            else v
        ),
    ),
    Setting(
        "net.ipv4.ip_local_port_range",
        "",
        "ports picked by bind(port 0) and by connect()",
        "port, reuseaddr",
        _port_range,
    ),
    Setting(
        "net.ipv4.ip_local_reserved_ports",
        "",
        "ports kept out of automatic allocation only (explicit bind() still works)",
        "port",
        _reserved,
    ),
    Setting(
        "net.ipv4.ip_unprivileged_port_start",
        "",
        "lowest port bind() allows without CAP_NET_BIND_SERVICE",
        "port",
        lambda v, _a: f"ports below {v} need root or CAP_NET_BIND_SERVICE",
    ),
    Setting(
        "net.ipv6.bindv6only",
        "",
        "default IPV6_V6ONLY: whether a [::] socket also takes IPv4",
        "reuseaddr, port",
        _choice(
            {
                "0": "[::] sockets are dual-stack: they also hold the IPv4 port",
                "1": "[::] sockets are IPv6-only",
            }
        ),
    ),
    Setting(
        "net.core.rmem_default",
        "B",
        "SO_RCVBUF of a new non-TCP socket (UDP, UNIX)",
        "udp-truncate, kernel",
        _bytes("a new UDP socket can queue {:,} B (payload plus overhead)"),
    ),
    Setting(
        "net.core.rmem_max",
        "B",
        "cap on setsockopt(SO_RCVBUF), which the kernel then doubles",
        "udp-truncate, partial-send, kernel",
        _bytes("SO_RCVBUF set with setsockopt() reads back at most {:,} B", 2),
    ),
    Setting(
        "net.core.wmem_default",
        "B",
        "SO_SNDBUF of a new non-TCP socket (UDP, UNIX)",
        "kernel",
        _bytes("a new UDP socket starts with SO_SNDBUF {:,} B"),
    ),
    Setting(
        "net.core.wmem_max",
        "B",
        "cap on setsockopt(SO_SNDBUF), which the kernel then doubles",
        "partial-send, kernel",
        _bytes("SO_SNDBUF set with setsockopt() reads back at most {:,} B", 2),
    ),
    Setting(
        "net.ipv4.tcp_rmem",
        "B",
        "TCP receive buffer: min, default, max (autotuning range)",
        "partial-send, kernel",
        _triple("receive"),
    ),
    Setting(
        "net.ipv4.tcp_wmem",
        "B",
        "TCP send buffer: min, default, max (autotuning range)",
        "partial-send, nagle, kernel",
        _triple("send"),
    ),
    Setting(
        "net.ipv4.udp_mem",
        "pages",
        "memory all UDP sockets may use: min, pressure, max",
        "none (udp-truncate's drops come from SO_RCVBUF)",
        _udp_mem,
    ),
)

NAMES = tuple(s.name for s in SETTINGS)


@dataclass(frozen=True)
class Params(ProbeParams):
    measure: bool = True


def read_settings() -> dict[str, Cell]:
    """Every setting this probe knows, as the fingerprint stores it (NA when absent)."""
    return kernel.sysctls(NAMES)


# -- measurements --------------------------------------------------------------------------
@dataclass
class Check:
    what: str
    measured: Cell
    expected: Cell
    agrees: bool | None
    unit: str = ""


def _opt(s: socket.socket, level: int, name: int) -> int:
    return int(s.getsockopt(level, name))


def _new_socket_checks(lab: Lab, raw: dict[str, str | None]) -> list[Check]:
    """What a fresh socket gets from the settings. Every value is deterministic."""
    out: list[Check] = []

    def setting_int(name: str, index: int = 0) -> int | None:
        t = _ints(raw.get(name) or "")
        return t[index] if len(t) > index else None

    def compare(what: str, measured: int, expected: int | None, unit: str = "B") -> None:
        exp: Cell = expected if expected is not None else NA(MISSING)
        out.append(
            Check(what, measured, exp, None if expected is None else measured == expected, unit)
        )

    tcp = lab.open_socket(socket.SOCK_STREAM)
    udp = lab.open_socket(socket.SOCK_DGRAM)
    sol = socket.SOL_SOCKET
    compare(
        "new TCP socket: SO_RCVBUF (tcp_rmem default)",
        _opt(tcp, sol, socket.SO_RCVBUF),
        setting_int("net.ipv4.tcp_rmem", 1),
    )
    compare(
        "new TCP socket: SO_SNDBUF (tcp_wmem default)",
        _opt(tcp, sol, socket.SO_SNDBUF),
        setting_int("net.ipv4.tcp_wmem", 1),
    )
    compare(
        "new UDP socket: SO_RCVBUF (rmem_default)",
        _opt(udp, sol, socket.SO_RCVBUF),
        setting_int("net.core.rmem_default"),
    )
    compare(
        "new UDP socket: SO_SNDBUF (wmem_default)",
        _opt(udp, sol, socket.SO_SNDBUF),
        setting_int("net.core.wmem_default"),
    )
    # socket(7): the kernel caps a SO_RCVBUF/SO_SNDBUF request at rmem_max/wmem_max (even
    # for root; only SO_RCVBUFFORCE bypasses it), then doubles it for bookkeeping overhead.
    for opt, cap_name, label in (
        (socket.SO_RCVBUF, "net.core.rmem_max", "SO_RCVBUF"),
        (socket.SO_SNDBUF, "net.core.wmem_max", "SO_SNDBUF"),
    ):
        cap = setting_int(cap_name)
        ask = min(2 * cap, INT_MAX) if cap is not None else 1 << 24
        udp.setsockopt(sol, opt, ask)
        expected = None if cap is None else 2 * min(ask, cap, INT_MAX // 2)
        compare(
            f"{label} after asking for 2 x {cap_name.rsplit('.', 1)[1]}",
            _opt(udp, sol, opt),
            expected,
        )
    cc = getattr(socket, "TCP_CONGESTION", None)
    want_cc = (raw.get("net.ipv4.tcp_congestion_control") or "").strip() or None
    if cc is not None:
        got = tcp.getsockopt(socket.IPPROTO_TCP, cc, 16).split(b"\0")[0].decode()
        out.append(
            Check(
                "new TCP socket: TCP_CONGESTION",
                got,
                want_cc if want_cc else NA(MISSING),
                None if want_cc is None else got == want_cc,
            )
        )
    try:
        v6 = lab.open_socket(socket.SOCK_STREAM, family=socket.AF_INET6)
        want_v6 = setting_int("net.ipv6.bindv6only")
        compare(
            "new IPv6 socket: IPV6_V6ONLY (bindv6only)",
            _opt(v6, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
            want_v6,
            "",
        )
    except OSError as exc:  # no IPv6 in this kernel or namespace
        out.append(Check("new IPv6 socket: IPV6_V6ONLY", NA(f"no IPv6 here: {exc}"), None, None))
    lohi = _ints(raw.get("net.ipv4.ip_local_port_range") or "")
    probe = lab.open_socket(socket.SOCK_STREAM)
    probe.bind(lab.host.sockaddr(0))
    lab.record("bind(port 0) check", probe)
    port = probe.getsockname()[1]
    if len(lohi) == 2:
        inside = lohi[0] <= port <= lohi[1]
        out.append(
            Check(
                "bind(port 0): port inside ip_local_port_range",
                "yes" if inside else f"no ({port})",
                "yes",
                inside,
            )
        )
    for s in (tcp, udp, probe):
        lab.close(s)
    return out


def _proc_row(
    proto: str, port: int, peer_port: int, state: int, lab: Lab, cap: float = 1.0
) -> float | None:
    """The timer (s) of our connection in /proc/net/tcp[6] once it reaches `state`.

    Matched on both ports: an ephemeral local port is reused for connections to other
    destinations, so an older TIME_WAIT socket may share it."""
    end = time.monotonic() + lab.deadline.timeout(cap, "waiting for a TCP state change")
    while True:
        for row in kernel.proc_net_sockets(proto, port):
            if row.state == state and row.remote[1] == peer_port:
                return row.timer_s
        if time.monotonic() >= end:
            return None
        time.sleep(0.002)


def _timer_checks(lab: Lab, raw: dict[str, str | None]) -> list[Check]:
    out: list[Check] = []
    proto = "tcp6" if lab.host.is_v6 else "tcp"
    fin = _ints(raw.get("net.ipv4.tcp_fin_timeout") or "")
    c, s = lab.tcp_pair(name="timers")
    info = kernel.tcp_info(c)
    rto_min = _ints(raw.get("net.ipv4.tcp_rto_min_us") or "")
    if info is None:
        out.append(
            Check("RTO of a fresh loopback connection", NA("no TCP_INFO here"), None, None, "ms")
        )
    else:
        rto_ms = info.rto_us / 1000
        floor = rto_min[0] / 1000 if rto_min else None
        out.append(
            Check(
                "RTO of a fresh loopback connection (tcpi_rto)",
                round(rto_ms, 1),
                f">= {floor:g}" if floor is not None else NA(MISSING),
                None if floor is None else rto_ms >= floor - 1,
                "ms",
            )
        )
    port, peer_port = c.getsockname()[1], c.getpeername()[1]
    # The client closes first while the server keeps its end open: the orphaned client
    # sits in FIN_WAIT2 for tcp_fin_timeout (shorter values are raised to 3.5 x RTO;
    # tcp_fin_timeout above 60 s is spent partly in a keepalive timer first, see
    # tcp_close() in net/ipv4/tcp.c).
    lab.close(c)
    fw2 = _proc_row(proto, port, peer_port, 5, lab)
    if fw2 is None:
        out.append(
            Check(
                "FIN_WAIT2 timer, orphaned socket", NA("no /proc/net/tcp row seen"), None, None, "s"
            )
        )
    else:
        want: Cell = NA(MISSING)
        agrees = None
        if fin:
            f = float(fin[0])
            expected = f if f <= TIMEWAIT_LEN_S else f - TIMEWAIT_LEN_S
            floor = 3.5 * (info.rto_us / 1e6) if info is not None else 0.0
            expected = max(expected, floor)
            want = round(expected, 1)
            agrees = abs(fw2 - expected) <= TIMER_SLACK_S
        out.append(
            Check("FIN_WAIT2 timer, orphaned socket (tcp_fin_timeout)", fw2, want, agrees, "s")
        )
    # Now the server closes: its FIN moves the client to TIME_WAIT, whose length is the
    # compiled-in TCP_TIMEWAIT_LEN whatever tcp_fin_timeout says.
    lab.close(s)
    tw = _proc_row(proto, port, peer_port, 6, lab)
    if tw is None:
        out.append(Check("TIME_WAIT timer", NA("no /proc/net/tcp row seen"), None, None, "s"))
    else:
        out.append(
            Check(
                "TIME_WAIT timer after the peer closed (TCP_TIMEWAIT_LEN)",
                tw,
                TIMEWAIT_LEN_S,
                abs(tw - TIMEWAIT_LEN_S) <= TIMER_SLACK_S,
                "s",
            )
        )
    return out


# -- the probe --------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    values = read_settings()
    report = Report("kernel", params=params_dict(params), environment=environment(values))
    raw: dict[str, str | None] = {n: kernel.sysctl(n) for n in NAMES}
    t = legacy_table(
        report,
        "Kernel settings (this network namespace, from /proc/sys)",
        ["setting", "value", "unit", "what it changes", "here", "shown by"],
    )
    for st in SETTINGS:
        v = values[st.name]
        r = raw[st.name]
        if isinstance(v, NA):
            reason = MISSING if kernel.IS_LINUX else NOT_LINUX
            t.add(st.name, NA(reason), st.unit, st.changes, None, st.shown_by)
            continue
        cell: Cell = v if v != "" else "(empty)"
        t.add(st.name, cell, st.unit, st.changes, st.reading(r or "", raw), st.shown_by)
    new_checks: list[Check] = []
    timers: list[Check] = []
    if params.measure:
        with Lab(host, deadline) as lab:
            new_checks = _new_socket_checks(lab, raw)
            if kernel.IS_LINUX:
                timers = _timer_checks(lab, raw)
            report.endpoints = lab.endpoints
        m = legacy_table(
            report,
            "What a new socket gets (measured now)",
            ["check", "measured", "expected from the settings", "agrees"],
        )
        for ch in new_checks:
            m.add(ch.what, ch.measured, ch.expected, ch.agrees)
        if timers:
            tt = legacy_table(
                report,
                "Timers of a loopback connection (measured now)",
                ["check", "measured", "expected", "unit", "agrees"],
                volatile=["measured"],
            )
            for ch in timers:
                tt.add(ch.what, ch.measured, ch.expected, ch.unit, ch.agrees)
    _findings(report, values, raw, new_checks, timers)
    _notes(report)
    report.duration_s = watch()
    return report


def _findings(
    report: Report,
    values: dict[str, Cell],
    raw: dict[str, str | None],
    new_checks: list[Check],
    timers: list[Check],
) -> None:
    f = report.findings
    missing = [n for n, v in values.items() if isinstance(v, NA)]
    read = len(values) - len(missing)
    f.append(
        f"{read} of {len(values)} settings read from /proc/sys"
        + (
            f"; absent on this kernel or in this network namespace: {', '.join(missing)}."
            if missing
            else "."
        )
    )
    if new_checks:
        bad = [c for c in new_checks if c.agrees is False]
        compared = [c for c in new_checks if c.agrees is not None]
        if not bad:
            f.append(
                f"All {len(compared)} new-socket checks agreed with the settings, e.g. a TCP "
                f"socket starts with SO_RCVBUF {_fmt(new_checks[0].measured)} B and a UDP socket "
                f"with {_fmt(new_checks[2].measured)} B."
            )
        else:
            f.append(
                f"{len(bad)} of {len(compared)} new-socket checks disagreed with the settings: "
                + "; ".join(
                    f"{c.what}: {_fmt(c.measured)}, expected {_fmt(c.expected)}" for c in bad
                )
                + "."
            )
    by = {c.what.split(" (")[0]: c for c in timers}
    fw2, tw = (
        by.get("FIN_WAIT2 timer, orphaned socket"),
        by.get("TIME_WAIT timer after the peer closed"),
    )
    fin = raw.get("net.ipv4.tcp_fin_timeout")
    if (
        fw2 is not None
        and tw is not None
        and fin is not None
        and isinstance(fw2.measured, float)
        and isinstance(tw.measured, float)
    ):
        s = (
            f"tcp_fin_timeout is {fin} s: the orphaned FIN_WAIT2 socket's timer read "
            f"{fw2.measured:.1f} s; after the peer closed, its TIME_WAIT timer read "
            f"{tw.measured:.1f} s"
        )
        fin_s = float(_ints(fin)[0]) if _ints(fin) else 0.0
        if abs(tw.measured - fin_s) > 2 * TIMER_SLACK_S:
            s += ", so TIME_WAIT did not follow tcp_fin_timeout."
        else:
            s += (
                ". The two coincide here, so this run alone cannot tell them apart: rerun in a "
                "network namespace with another tcp_fin_timeout (docs/kernel.md shows one)."
            )
        f.append(s)
    rto = by.get("RTO of a fresh loopback connection")
    if rto is not None and isinstance(rto.measured, float):
        floor = _ints(raw.get("net.ipv4.tcp_rto_min_us") or "")
        against = (
            f" against a floor of {floor[0] / 1000:g} ms (tcp_rto_min_us {floor[0]:,} µs)"
            if floor
            else ""
        )
        f.append(f"A fresh loopback connection's RTO read {rto.measured:g} ms{against}.")
    lohi = _ints(raw.get("net.ipv4.ip_local_port_range") or "")
    if len(lohi) == 2:
        res = reserved_ports(raw.get("net.ipv4.ip_local_reserved_ports") or "")
        f.append(
            f"Ephemeral ports: {lohi[1] - lohi[0] + 1:,} ({lohi[0]}-{lohi[1]}), {res:,} "
            "reserved; bind(port 0) and a connect() without bind() pick their local port "
            "here (connect() may share one local port among different destinations)."
        )
    report.summary = _headline(values, timers, read)


def _fmt(v: Cell) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, NA):
        return "n/a"
    return str(v)


def _headline(values: dict[str, Cell], timers: list[Check], read: int) -> str:
    parts = [f"{read} of {len(values)} settings read"]
    for name, label, unit in (
        ("net.core.somaxconn", "somaxconn", ""),
        ("net.ipv4.tcp_congestion_control", "congestion control", ""),
        ("net.ipv4.tcp_fin_timeout", "tcp_fin_timeout", " s"),
    ):
        v = values.get(name)
        if v is not None and not isinstance(v, NA):
            parts.append(f"{label} {_fmt(v)}{unit}")
    tw = next((c for c in timers if c.what.startswith("TIME_WAIT")), None)
    if tw is not None and isinstance(tw.measured, float):
        parts.append(f"TIME_WAIT timer {tw.measured:.0f} s")
    return ", ".join(parts)


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "Values come from /proc/sys/net/... of the network namespace this process runs in; "
            "most net.* settings are per namespace, so a container can differ from its host. "
            "Meanings follow the kernel's Documentation/networking/ip-sysctl.rst, tcp(7), "
            "socket(7) and udp(7); `here` restates the value, it is not a measurement.",
            "Only the two 'measured now' tables are measurements. New-socket values are "
            "read with getsockopt() on fresh sockets; the FIN_WAIT2 and TIME_WAIT timers "
            "from /proc/net/tcp (USER_HZ ticks, read a moment after each state change); the "
            "RTO from TCP_INFO tcpi_rto (tcp(7)).",
            "tcp_fin_timeout does not shorten TIME_WAIT: TIME_WAIT lasts TCP_TIMEWAIT_LEN "
            "(60 s, compiled in). What helps a restarting server is SO_REUSEADDR on the old "
            "and the new socket (sockprobe reuseaddr); tcp_tw_reuse only affects connect().",
            "The timer check leaves one TIME_WAIT socket on an ephemeral loopback port for "
            "60 s (its port is under Endpoints: `ss -tan state time-wait`).",
            "Other platforms (documented, not measured here): macOS has sysctl "
            "kern.ipc.somaxconn, net.inet.ip.portrange.first/last and net.inet.tcp.msl (in "
            "ms; TIME_WAIT lasts 2 x MSL). Windows has `netsh int ipv4 show dynamicport tcp` "
            "and the TcpTimedWaitDelay registry value. sockprobe reads neither yet, so every "
            "value there is n/a.",
        ]
    )
