"""The close timers and the keepalive timer of a real loopback connection, read from
/proc/net/tcp, against what the kernel's rules say they should be.

The client of a connection closes first while the server keeps its end open, so the
orphaned client waits in FIN_WAIT2 for a FIN that does not come. /proc/net/tcp shows
which timer holds it and how long that timer has left: the timewait timer (3) of a
FIN_WAIT2 mini-socket when the lifetime is at most 60 s, the keepalive timer (2) of a
full socket for its first tcp_fin_timeout - 60 s above that (rules.fin_wait2). Then the
server closes, its FIN moves the client to TIME_WAIT, and that timer reads the
compiled-in 60 s whatever tcp_fin_timeout says. With --follow-fin-wait2 the probe
instead watches the orphan until the kernel frees it and times its whole life (a second
connection then shows TIME_WAIT).

Before closing, the server sets SO_KEEPALIVE: its keepalive timer then reads
tcp_keepalive_time (tcp_set_keepalive -> inet_csk_reset_keepalive_timer).

This leaves one TIME_WAIT socket on an ephemeral loopback port for 60 s, as any client
that closes first does.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import rules
from sockprobe.lab import Lab, pair_or_unsupported
from sockprobe.report import NA, VOLATILE, Cell, Report, col

#: /proc/net/tcp timers are printed in USER_HZ ticks and read a moment after the change;
#: the timer wheel may also fire a long timer late by up to 1/8 of its length (kernel/
#: time/timer.c: each wheel level is 8 times coarser), so a lifetime check allows that.
TIMER_SLACK_S = 1.0
#: /proc/net/tcp timer_active values (get_tcp4_sock in net/ipv4/tcp_ipv4.c).
TIMER_NAMES = {0: "none", 1: "retransmit", 2: "keepalive", 3: "timewait", 4: "zero window probe"}
FIN_WAIT2, TIME_WAIT = 5, 6


@dataclass
class Timer:
    id: str
    what: str
    measured: Cell
    expected: Cell
    unit: str
    agrees: bool | None


@dataclass(frozen=True)
class Seen:
    timer: int
    timer_s: float


def _proto(lab: Lab) -> str:
    return "tcp6" if lab.host.is_v6 else "tcp"


def _row(lab: Lab, port: int, peer_port: int, state: int, wait: float) -> Seen | None:
    """Our socket's timer once it is in `state`, polled for up to `wait` s. Matched on
    both ports: an ephemeral local port is reused towards other destinations, so an
    older TIME_WAIT socket may share it."""
    end = time.monotonic() + lab.deadline.timeout(wait, "waiting for a TCP state change")
    while True:
        for row in kernel.proc_net_sockets(_proto(lab), port):
            if row.state == state and row.remote[1] == peer_port:
                return Seen(row.timer, row.timer_s)
        if time.monotonic() >= end:
            lab.deadline.check("waiting for a TCP state change")  # cut short: exit 4
            return None
        time.sleep(0.002)


def _gone_after(lab: Lab, port: int, peer_port: int, t0: float, wait: float) -> float | None:
    """Seconds from t0 until no socket of ours is left on the 4-tuple, or None."""
    end = time.monotonic() + lab.deadline.timeout(wait, "waiting for the FIN_WAIT2 socket to go")
    while time.monotonic() < end:
        rows = [r for r in kernel.proc_net_sockets(_proto(lab), port) if r.remote[1] == peer_port]
        if not rows:
            return time.monotonic() - t0
        time.sleep(0.01)
    lab.deadline.check("waiting for the FIN_WAIT2 socket to go")  # cut short: exit 4
    return None


def _tw_count(lab: Lab) -> int:
    return sum(1 for r in kernel.proc_net_sockets(_proto(lab)) if r.state == TIME_WAIT)


def _no_minisocket(st: rules.Settings, lab: Lab, kind: str) -> str:
    cap = st.int("net.ipv4.tcp_max_tw_buckets")
    if cap == 0:
        return f"tcp_max_tw_buckets is 0: no {kind} socket is created, the socket was freed"
    if cap is not None and _tw_count(lab) >= cap:
        return (
            f"tcp_max_tw_buckets is {cap:,} and this namespace already holds that many "
            f"TIME_WAIT sockets: no {kind} mini-socket was created"
        )
    return f"no {kind} socket of this connection appeared in /proc/net/tcp within the wait"


def measure(lab: Lab, st: rules.Settings, follow: bool) -> tuple[list[Timer], float | None]:
    """The timer rows, and the RTO measured (s) that the rules' floors use."""
    out: list[Timer] = []
    c, s = pair_or_unsupported(lab, "the timers check", name="timers")
    info = kernel.tcp_info(c)
    rto = info.rto_us / 1e6 if info is not None else None
    floor_us = st.int("net.ipv4.tcp_rto_min_us")
    if rto is None:
        out.append(
            Timer(
                "rto",
                "RTO of a fresh loopback connection",
                NA("no TCP_INFO here"),
                None,
                "ms",
                None,
            )
        )
    else:
        floor_ms = floor_us / 1000 if floor_us is not None else None
        out.append(
            Timer(
                "rto",
                "RTO of a fresh loopback connection (tcpi_rto), at least tcp_rto_min_us",
                round(rto * 1000, 1),
                floor_ms if floor_ms is not None else NA("tcp_rto_min_us: not on this kernel"),
                "ms",
                None if floor_ms is None else rto * 1000 >= floor_ms - 1,
            )
        )
    port, peer_port = c.getsockname()[1], c.getpeername()[1]
    _keepalive(lab, st, s, port, out)
    fin = st.int("net.ipv4.tcp_fin_timeout")
    fw = (
        rules.fin_wait2(fin, rto if rto is not None else rules.TCP_RTO_MIN_S)
        if fin is not None
        else None
    )
    t0 = time.monotonic()
    lab.close(c)
    seen = _row(lab, port, peer_port, FIN_WAIT2, 1.0)
    if seen is None:
        reason = NA(_no_minisocket(st, lab, "FIN_WAIT2"))
        out.append(
            Timer("fin_wait2_timer", "orphaned FIN_WAIT2: first timer", reason, None, "s", None)
        )
    else:
        first_kind = ("keepalive" if fw and fw.keepalive_s else "timewait") if fw else None
        first_len = (fw.keepalive_s or fw.minisock_s) if fw else None
        out.append(
            Timer(
                "fin_wait2_phase",
                "orphaned FIN_WAIT2: which timer holds it (/proc/net/tcp)",
                TIMER_NAMES.get(seen.timer, str(seen.timer)),
                first_kind if first_kind else NA("tcp_fin_timeout: not on this kernel"),
                "",
                None if first_kind is None else TIMER_NAMES.get(seen.timer) == first_kind,
            )
        )
        out.append(
            Timer(
                "fin_wait2_timer",
                "orphaned FIN_WAIT2: time left on that timer",
                seen.timer_s,
                round(first_len, 2) if first_len is not None else None,
                "s",
                None if first_len is None else abs(seen.timer_s - first_len) <= TIMER_SLACK_S,
            )
        )
    if follow and fw is not None and seen is not None:
        wait = fw.total_s * 1.125 + 2 * TIMER_SLACK_S
        gone = _gone_after(lab, port, peer_port, t0, wait)
        out.append(
            Timer(
                "fin_wait2_lifetime",
                "orphaned FIN_WAIT2: closed until freed (--follow-fin-wait2)",
                round(gone, 2) if gone is not None else NA(f"still there after {wait:.1f} s"),
                round(fw.total_s, 2),
                "s",
                None if gone is None else fw.total_s - 0.1 <= gone <= wait,
            )
        )
        lab.close(s)
        c, s = pair_or_unsupported(lab, "the TIME_WAIT check", name="time-wait")
        port, peer_port = c.getsockname()[1], c.getpeername()[1]
        lab.close(c)
    # The server closes: its FIN moves the client to TIME_WAIT, whose length is the
    # compiled-in TCP_TIMEWAIT_LEN whatever tcp_fin_timeout says (tcp_timewait_state_process).
    lab.close(s)
    tw = _row(lab, port, peer_port, TIME_WAIT, 1.0)
    what = "TIME_WAIT after the peer closed: time left (TCP_TIMEWAIT_LEN)"
    if tw is None:
        out.append(
            Timer(
                "time_wait_timer",
                what,
                NA(_no_minisocket(st, lab, "TIME_WAIT")),
                rules.TCP_TIMEWAIT_LEN_S,
                "s",
                None,
            )
        )
    else:
        out.append(
            Timer(
                "time_wait_timer",
                what,
                tw.timer_s,
                rules.TCP_TIMEWAIT_LEN_S,
                "s",
                abs(tw.timer_s - rules.TCP_TIMEWAIT_LEN_S) <= TIMER_SLACK_S,
            )
        )
    return out, rto


def _keepalive(lab: Lab, st: rules.Settings, s: socket.socket, port: int, out: list[Timer]) -> None:
    name = "net.ipv4.tcp_keepalive_time"
    want = st.int(name)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s_port, c_port = s.getsockname()[1], port
    seen = None
    for row in kernel.proc_net_sockets(_proto(lab), s_port):
        if row.remote[1] == c_port and row.state == 1:
            seen = Seen(row.timer, row.timer_s)
    what = "SO_KEEPALIVE on an idle connection: keepalive timer left"
    if seen is None or TIMER_NAMES.get(seen.timer) != "keepalive":
        got = NA("no keepalive timer showed in /proc/net/tcp")
        out.append(Timer("keepalive_timer", what, got, want, "s", None))
        return
    out.append(
        Timer(
            "keepalive_timer",
            what,
            seen.timer_s,
            want if want is not None else NA(f"{name}: not on this kernel"),
            "s",
            None if want is None else abs(seen.timer_s - want) <= TIMER_SLACK_S,
        )
    )


def add(report: Report, timers: list[Timer]) -> None:
    t = report.table(
        "timers",
        "Timers of a loopback connection (measured now, and what the rules predict)",
        [
            col("check"),
            col("what"),
            col("measured", kind=VOLATILE),
            col("expected", "expected", kind=VOLATILE),
            col("unit"),
            col("agrees"),
        ],
        keys=["check"],
    )
    for tm in timers:
        t.add(tm.id, tm.what, tm.measured, tm.expected, tm.unit, tm.agrees)


def findings(report: Report, st: rules.Settings, timers: list[Timer], rto: float | None) -> None:
    by = {t.id: t for t in timers}
    fin = st.int("net.ipv4.tcp_fin_timeout")
    first, tw = by.get("fin_wait2_timer"), by.get("time_wait_timer")
    phase = by.get("fin_wait2_phase")
    if fin is not None and first is not None and isinstance(first.measured, float):
        fw = rules.fin_wait2(fin, rto if rto is not None else rules.TCP_RTO_MIN_S)
        kind = phase.measured if phase is not None else "?"
        s = (
            f"tcp_fin_timeout is {fin} s: the orphaned FIN_WAIT2 socket sat on the {kind} "
            f"timer with {first.measured:.1f} s left, so the kernel keeps it "
            f"{rules.duration(fw.total_s)} in all"
        )
        if fw.keepalive_s:
            s += (
                f" ({rules.duration(fw.keepalive_s)} on that timer, then "
                f"{rules.duration(fw.minisock_s)} as a mini-socket)"
            )
        life = by.get("fin_wait2_lifetime")
        if life is not None and isinstance(life.measured, float):
            s += f"; it was freed {life.measured:.2f} s after close()"
        s += "."
        report.findings.append(s)
    if tw is not None and isinstance(tw.measured, float) and fin is not None:
        if abs(tw.measured - fin) > 2 * TIMER_SLACK_S:
            report.findings.append(
                f"After the peer closed, the TIME_WAIT timer read {tw.measured:.1f} s: TIME_WAIT "
                f"did not follow tcp_fin_timeout ({fin} s)."
            )
        else:
            report.findings.append(
                f"After the peer closed, the TIME_WAIT timer read {tw.measured:.1f} s, which "
                f"equals tcp_fin_timeout ({fin} s) here, so this run alone cannot tell the two "
                "apart: docs/kernel.md shows a namespace with another tcp_fin_timeout."
            )
    elif tw is not None and isinstance(tw.measured, NA):
        report.findings.append(f"No TIME_WAIT socket was seen: {tw.measured.reason}.")
    r = by.get("rto")
    if r is not None and isinstance(r.measured, float):
        floor = st.int("net.ipv4.tcp_rto_min_us")
        against = f" against a floor of {floor / 1000:g} ms (tcp_rto_min_us)" if floor else ""
        report.findings.append(
            f"A fresh loopback connection's RTO read {r.measured:g} ms{against}."
        )
    ka = by.get("keepalive_timer")
    if ka is not None and isinstance(ka.measured, float):
        report.findings.append(
            f"SO_KEEPALIVE armed a keepalive timer with {ka.measured:,.1f} s left "
            f"(tcp_keepalive_time {_fmt(ka.expected)} s)."
        )


def _fmt(v: Cell) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
