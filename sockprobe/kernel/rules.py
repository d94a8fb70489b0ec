"""What each kernel setting does here: the kernel's rule as a function of the settings.

Every "what it does here" sentence of `sockprobe kernel` comes from one function below,
keyed by the setting's name in `RULES`. A function takes the values read from /proc/sys
(all of them: many rules depend on a second setting) and, where the rule depends on it,
the RTO measured on a fresh loopback connection, and computes what the running kernel
will do: the SYN retransmission times, the FIN_WAIT2 lifetime, the listen() admission
count. The arithmetic follows the kernel source named beside each function (Linux 6.x:
net/ipv4/tcp_timer.c, tcp_input.c, tcp_minisocks.c, include/net/tcp.h), and
tests/test_settings.py compares the results with measurements made in network namespaces
with the setting changed.

The numeric rules live in kernel/timing.py (`syn_schedule`, `retransmit_schedule`,
`fin_wait2`, `listen_admits`, `keepalive_dead_after`, re-exported here) so that probes and
tests can use the numbers, not parse the sentences.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sockprobe.kernel.timing import (
    LATE_MAX as LATE_MAX,
)
from sockprobe.kernel.timing import (
    LATE_MIN as LATE_MIN,
)
from sockprobe.kernel.timing import (
    TCP_RTO_MAX_S as TCP_RTO_MAX_S,
)
from sockprobe.kernel.timing import (
    TCP_RTO_MIN_S as TCP_RTO_MIN_S,
)
from sockprobe.kernel.timing import (  # re-exported: probes and tests use rules.X
    TCP_TIMEOUT_INIT_S as TCP_TIMEOUT_INIT_S,
)
from sockprobe.kernel.timing import (
    TCP_TIMEWAIT_LEN_S as TCP_TIMEWAIT_LEN_S,
)
from sockprobe.kernel.timing import (
    FinWait2 as FinWait2,
)
from sockprobe.kernel.timing import (
    Schedule as Schedule,
)
from sockprobe.kernel.timing import (
    duration as duration,
)
from sockprobe.kernel.timing import (
    fin_wait2 as fin_wait2,
)
from sockprobe.kernel.timing import (
    keepalive_dead_after as keepalive_dead_after,
)
from sockprobe.kernel.timing import (
    listen_admits as listen_admits,
)
from sockprobe.kernel.timing import (
    model_timeout as model_timeout,
)
from sockprobe.kernel.timing import (
    orphan_retries as orphan_retries,
)
from sockprobe.kernel.timing import (
    retransmit_outcome as retransmit_outcome,
)
from sockprobe.kernel.timing import (
    retransmit_schedule as retransmit_schedule,
)
from sockprobe.kernel.timing import (
    syn_schedule as syn_schedule,
)
from sockprobe.kernel.timing import (
    timer_slack as timer_slack,
)

#: Settings the kernel keeps once for the whole host. In another network namespace they
#: are either read-only copies of the host's value (net.core.*mem_*, the congestion
#: control lists) or absent (udp_mem, tcp_mem, tcp_max_orphans) while still applying.
HOST_WIDE_READ_ONLY = frozenset(
    {
        "net.core.rmem_default",
        "net.core.rmem_max",
        "net.core.wmem_default",
        "net.core.wmem_max",
        "net.ipv4.tcp_available_congestion_control",
        "net.ipv4.tcp_allowed_congestion_control",
    }
)
INITIAL_NETNS_ONLY = frozenset({"net.ipv4.udp_mem", "net.ipv4.tcp_mem", "net.ipv4.tcp_max_orphans"})


def scope(name: str) -> str:
    """Where a setting applies: 'host' (one value for every namespace) or 'namespace'."""
    return "host" if name in HOST_WIDE_READ_ONLY | INITIAL_NETNS_ONLY else "namespace"


def absent_reason(name: str) -> str:
    """Why a setting reads nothing here, naming the cause."""
    if name in INITIAL_NETNS_ONLY:
        return (
            "exists only in the initial network namespace and this process runs in another "
            "one; the host's value applies here too (read it on the host)"
        )
    return "not on this kernel (no such file under /proc/sys)"


@dataclass(frozen=True)
class Settings:
    """The values read from /proc/sys (None where absent), plus the RTO of a fresh
    loopback connection when it was measured (seconds), which some floors depend on."""

    raw: Mapping[str, str | None]
    rto_s: float | None = None

    def ints(self, name: str) -> list[int]:
        try:
            return [int(x) for x in (self.raw.get(name) or "").split()]
        except ValueError:
            return []

    def int(self, name: str) -> int | None:
        v = self.ints(name)
        return v[0] if len(v) == 1 else None

    def text(self, name: str) -> str | None:
        v = self.raw.get(name)
        return None if v is None else v.strip()


# -- the numeric rules --------------------------------------------------------------------
def _count(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _times(ts: tuple[float, ...]) -> str:
    return ", ".join(f"{t:g}" for t in ts)


def _rto(s: Settings) -> tuple[float, str]:
    if s.rto_s is not None:
        return s.rto_s, f"an RTO of {s.rto_s * 1000:g} ms (measured)"
    floor = s.int("net.ipv4.tcp_rto_min_us")
    rto = floor / 1e6 if floor else TCP_RTO_MIN_S
    return rto, f"the RTO at its {rto * 1000:g} ms floor as on loopback"


def _capped(s: Settings) -> str:
    cap = _rto_max(s)
    return "" if cap == TCP_RTO_MAX_S else f", capped at {cap:g} s,"


def _rto_max(s: Settings) -> float:
    ms = s.int("net.ipv4.tcp_rto_max_ms")
    return ms / 1000 if ms else TCP_RTO_MAX_S


Rule = Callable[[Settings], str]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(f: Rule) -> Rule:
        RULES[name] = f
        return f

    return register


def here(name: str, s: Settings) -> str | None:
    """The sentence for `name`, or None when the setting (or one it needs) is unreadable."""
    f = RULES.get(name)
    if f is None or s.raw.get(name) is None:
        return None
    try:
        return f(s)
    except (TypeError, ValueError):  # a value of a shape this rule does not know
        return None


def _need(v: int | None) -> int:
    if v is None:
        raise ValueError("setting unreadable")
    return v


# -- listen() and the handshake -----------------------------------------------------------
@rule("net.core.somaxconn")
def somaxconn(s: Settings) -> str:
    m = _need(s.int("net.core.somaxconn"))
    return (
        f"listen(n) is clamped to {m:,}: a listener that does not accept() completes "
        f"min(n, {m:,}) + 1 connections (listen(128): {listen_admits(128, m):,}); "
        "further SYNs are dropped"
    )


@rule("net.ipv4.tcp_max_syn_backlog")
def tcp_max_syn_backlog(s: Settings) -> str:
    m = _need(s.int("net.ipv4.tcp_max_syn_backlog"))
    cookies = s.int("net.ipv4.tcp_syncookies")
    if cookies == 0:
        return (
            f"syncookies off: once more than {m - (m >> 2):,} requests of one listener are "
            "half-open, SYNs from peers without TCP metrics history are dropped; the listen "
            "backlog still caps half-open requests"
        )
    return (
        f"unused while tcp_syncookies is {cookies}: the listen backlog alone bounds a "
        "listener's half-open requests (tcp_conn_request)"
    )


@rule("net.ipv4.tcp_syncookies")
def tcp_syncookies(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_syncookies"))
    # inet_csk_reqsk_queue_is_full() compares the request count with the listen backlog
    # using `>` on the kernels measured (6.18): backlog + 1 requests are kept.
    full = "once a listener holds more half-open requests than its listen backlog"
    if v == 0:
        return f"off: {full}, further SYNs are dropped"
    lost = "window scaling and SACK survive only with timestamps, MSS from a table of 4"
    if v == 1:
        return f"{full}, further SYNs get a cookie instead of a queued request ({lost})"
    return f"every SYN gets a cookie, no request is queued ({lost})"


@rule("net.ipv4.tcp_abort_on_overflow")
def tcp_abort_on_overflow(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_abort_on_overflow"))
    if v == 0:
        return (
            "a final ACK that meets a full accept queue is dropped and the request kept: the "
            "SYN-ACK is resent and a later ACK completes it if there is room; SYNs that meet "
            "a full queue are dropped"
        )
    return (
        "a half-open request whose final ACK meets a full accept queue is reset; SYNs that "
        "meet a full queue are still dropped, and a cookie ACK that meets one is dropped "
        "silently (that client thinks it is connected)"
    )


@rule("net.ipv4.tcp_syn_retries")
def tcp_syn_retries(s: Settings) -> str:
    n = _need(s.int("net.ipv4.tcp_syn_retries"))
    lin = s.int("net.ipv4.tcp_syn_linear_timeouts")
    sch = syn_schedule(n, lin or 0, rto_max=_rto_max(s))
    budget = model_timeout(n, TCP_TIMEOUT_INIT_S, _rto_max(s))
    linear = f" and tcp_syn_linear_timeouts {lin}" if lin is not None else " (no linear timeouts)"
    return (
        f"a time budget of {duration(budget)} from the first SYN, with initial RTO 1 s{linear}: "
        f"an unanswered connect() retransmits {_count(sch.retransmissions)} (at "
        f"{_times(sch.sends)} s) and fails with ETIMEDOUT at {duration(sch.gives_up_s)}"
    )


@rule("net.ipv4.tcp_syn_linear_timeouts")
def tcp_syn_linear_timeouts(s: Settings) -> str:
    lin = _need(s.int("net.ipv4.tcp_syn_linear_timeouts"))
    n = s.int("net.ipv4.tcp_syn_retries")
    tail = (
        f"; with tcp_syn_retries {n} it also adds {lin} to the retransmission cap ({n + lin})"
        if n is not None
        else ""
    )
    return (
        f"the initial 1 s SYN timeout and the next {lin} stay at 1 s ({lin + 1} timeouts), "
        f"later ones double{tail}"
    )


@rule("net.ipv4.tcp_synack_retries")
def tcp_synack_retries(s: Settings) -> str:
    n = _need(s.int("net.ipv4.tcp_synack_retries"))
    sch = synack_schedule(n)
    return (
        f"an unacknowledged SYN-ACK is resent {n} times (at {_times(sch.sends)} s) and the "
        f"request dropped at {duration(sch.gives_up_s)} (reqsk_timer_handler; fewer when "
        "more than half the listen backlog is half-open)"
    )


def synack_schedule(retries: int, rto: float = TCP_TIMEOUT_INIT_S) -> Schedule:
    """A half-open request's SYN-ACK resends (inet_connection_sock.c reqsk_timer_handler):
    the timer starts at 1 s and doubles (reqsk_timeout), and the request is dropped when
    it fires with num_timeout already at tcp_synack_retries (syn_ack_recalc). A SYN
    retransmitted by the client also triggers a resend, outside this schedule."""
    sends = tuple(rto * ((1 << (i + 1)) - 1) for i in range(retries))
    return Schedule(sends, rto * ((1 << (retries + 1)) - 1))


# -- retransmission and keepalive timers ----------------------------------------------------
@rule("net.ipv4.tcp_retries1")
def tcp_retries1(s: Settings) -> str:
    n = _need(s.int("net.ipv4.tcp_retries1"))
    return (
        f"after {duration(model_timeout(n, TCP_RTO_MIN_S, _rto_max(s)))} of unacknowledged "
        "retransmissions (budget from 200 ms doubling) the route is re-checked and path MTU "
        "probing may "
        "start; the connection goes on"
    )


@rule("net.ipv4.tcp_retries2")
def tcp_retries2(s: Settings) -> str:
    n = _need(s.int("net.ipv4.tcp_retries2"))
    rto, where = _rto(s)
    return (
        f"a time budget of {duration(model_timeout(n, TCP_RTO_MIN_S, _rto_max(s)))} from the "
        "first "
        f"timeout retransmission (what {n} timeouts doubling from 200 ms{_capped(s)} add up "
        "to); with "
        f"{where}, unacknowledged data fails with ETIMEDOUT "
        f"{retransmit_outcome(n, rto, _rto_max(s))}"
    )


@rule("net.ipv4.tcp_orphan_retries")
def tcp_orphan_retries(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_orphan_retries"))
    rto, where = _rto(s)
    n = orphan_retries(v, rto, _rto_max(s))
    zero = " (0 means 8)" if v == 0 else ""
    return (
        f"a closed socket whose data or FIN goes unacknowledged uses {n}{zero} instead of "
        f"tcp_retries2: with {where} it is dropped {retransmit_outcome(n, rto, _rto_max(s))}"
    )


@rule("net.ipv4.tcp_keepalive_time")
def tcp_keepalive_time(s: Settings) -> str:
    t = _need(s.int("net.ipv4.tcp_keepalive_time"))
    i, p = s.int("net.ipv4.tcp_keepalive_intvl"), s.int("net.ipv4.tcp_keepalive_probes")
    dead = (
        f"; a silent peer is detected after {duration(keepalive_dead_after(t, i, p))}"
        if i is not None and p is not None
        else ""
    )
    return (
        f"only with SO_KEEPALIVE (TCP_KEEPIDLE overrides): the first probe after "
        f"{duration(t)} idle{dead}"
    )


@rule("net.ipv4.tcp_keepalive_intvl")
def tcp_keepalive_intvl(s: Settings) -> str:
    i = _need(s.int("net.ipv4.tcp_keepalive_intvl"))
    return f"unanswered keepalive probes are repeated every {duration(i)} (TCP_KEEPINTVL overrides)"


@rule("net.ipv4.tcp_keepalive_probes")
def tcp_keepalive_probes(s: Settings) -> str:
    p = _need(s.int("net.ipv4.tcp_keepalive_probes"))
    t, i = s.int("net.ipv4.tcp_keepalive_time"), s.int("net.ipv4.tcp_keepalive_intvl")
    total = (
        f": ETIMEDOUT {duration(keepalive_dead_after(t, i, p))} after the last data "
        f"({t} + {p} x {i} s)"
        if t is not None and i is not None
        else ""
    )
    return (
        f"{p} unanswered probes end the connection{total}; while data is unacknowledged "
        "tcp_retries2 applies instead (TCP_KEEPCNT overrides)"
    )


@rule("net.ipv4.tcp_rto_min_us")
def tcp_rto_min_us(s: Settings) -> str:
    us = _need(s.int("net.ipv4.tcp_rto_min_us"))
    return (
        f"no RTO below {us / 1000:g} ms unless a route's rto_min sets another; on loopback the "
        f"RTO sits at this floor, so the FIN_WAIT2 floor is {3.5 * us / 1e6:g} s (3.5 x RTO)"
    )


@rule("net.ipv4.tcp_rto_max_ms")
def tcp_rto_max_ms(s: Settings) -> str:
    ms = _need(s.int("net.ipv4.tcp_rto_max_ms"))
    return (
        f"retransmission timeouts double up to {ms / 1000:g} s, not beyond, and the time "
        "budgets of tcp_retries2 and tcp_syn_retries are computed with this cap"
    )


# -- closing: FIN_WAIT2, TIME_WAIT, orphans --------------------------------------------------
@rule("net.ipv4.tcp_fin_timeout")
def tcp_fin_timeout(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_fin_timeout"))
    rto, where = _rto(s)
    fw = fin_wait2(v, rto)
    if v < 3.5 * rto:
        head = (
            f"{duration(fw.fin_time_s)}: tcp_fin_timeout {v} s raised to 3.5 x RTO = "
            f"{duration(fw.fin_time_s)}, with {where}"
        )
    else:
        head = duration(fw.fin_time_s)
    if fw.keepalive_s:
        return (
            f"an orphaned FIN_WAIT2 socket lives {duration(fw.total_s)}, not {v} s: "
            f"{duration(fw.keepalive_s)} on the keepalive timer, then "
            f"{duration(fw.minisock_s)} as a FIN_WAIT2 mini-socket; TIME_WAIT stays 60 s"
        )
    return (
        f"an orphaned FIN_WAIT2 socket lives {head}, as a FIN_WAIT2 mini-socket; "
        "TIME_WAIT stays 60 s"
    )


@rule("net.ipv4.tcp_max_tw_buckets")
def tcp_max_tw_buckets(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_max_tw_buckets"))
    if v == 0:
        return (
            "no TIME_WAIT (or FIN_WAIT2 mini-) socket is ever created in this namespace: a "
            "closing socket is freed at once (TCPTimeWaitOverflow counts each)"
        )
    return (
        f"at most {v:,} TIME_WAIT and FIN_WAIT2 mini-sockets at once in this namespace; past "
        "that a closing socket skips them and is freed (TCPTimeWaitOverflow)"
    )


@rule("net.ipv4.tcp_max_orphans")
def tcp_max_orphans(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_max_orphans"))
    return (
        f"past {v:,} closed-but-unfinished sockets on the host, the kernel resets an orphan "
        "instead of finishing its close (tcp_out_of_resources: 'too many orphaned sockets')"
    )


@rule("net.ipv4.tcp_tw_reuse")
def tcp_tw_reuse(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_tw_reuse"))
    delay = s.int("net.ipv4.tcp_tw_reuse_delay")
    age = f"{delay:,} ms" if delay is not None else "1 s"
    if v == 0:
        return (
            "off: connect() without bind() never picks a local port whose 4-tuple is in "
            "TIME_WAIT (an explicit bind() + connect() can still take one over)"
        )
    which = "any destination" if v == 1 else "loopback connections only"
    if s.int("net.ipv4.tcp_timestamps") == 0:
        return (
            f"allowed ({which}) but without effect: tcp_timestamps is 0, so no new "
            "connection's TIME_WAIT carries the timestamps reuse needs"
        )
    return (
        f"connect() may take over a TIME_WAIT 4-tuple ({which}) when the old connection "
        f"used TCP timestamps and entered TIME_WAIT at least {age} ago; bind() is unaffected"
    )


@rule("net.ipv4.tcp_tw_reuse_delay")
def tcp_tw_reuse_delay(s: Settings) -> str:
    d = _need(s.int("net.ipv4.tcp_tw_reuse_delay"))
    reuse = s.int("net.ipv4.tcp_tw_reuse")
    if reuse == 0:
        cond = "; unused while tcp_tw_reuse is 0"
    elif s.int("net.ipv4.tcp_timestamps") == 0:
        cond = "; unused while tcp_timestamps is 0 (reuse needs the old connection's timestamps)"
    else:
        cond = " (only where tcp_tw_reuse allows reuse and the old connection used timestamps)"
    return f"a TIME_WAIT socket is reusable {d:,} ms after it entered TIME_WAIT{cond}"


@rule("net.ipv4.tcp_rfc1337")
def tcp_rfc1337(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_rfc1337"))
    if v == 0:
        return "an in-window RST ends a TIME_WAIT socket early (tcp_timewait_state_process)"
    return "RSTs are ignored in TIME_WAIT: it always lasts 60 s (RFC 1337)"


@rule("net.ipv4.tcp_migrate_req")
def tcp_migrate_req(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_migrate_req"))
    if v == 0:
        return "off: closing one SO_REUSEPORT listener resets the clients queued on it"
    return "on: closing one SO_REUSEPORT listener moves its queued clients to another"


# -- options negotiated in the handshake ----------------------------------------------------
@rule("net.ipv4.tcp_timestamps")
def tcp_timestamps(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_timestamps"))
    if v == 0:
        return "off: no timestamps in new connections, so tcp_tw_reuse and PAWS cannot apply"
    offset = "with a random offset per connection" if v == 1 else "without a random offset"
    return f"offered in every SYN, {offset}; used when the peer offers them too"


@rule("net.ipv4.tcp_window_scaling")
def tcp_window_scaling(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_window_scaling"))
    if v == 0:
        return "off: the receive window is capped at 65,535 B whatever SO_RCVBUF says"
    return "offered in every SYN: windows above 64 KiB when the peer agrees"


@rule("net.ipv4.tcp_sack")
def tcp_sack(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_sack"))
    if v == 0:
        # Without SACK, fast recovery marks one segment lost per partial ACK
        # (net/ipv4/tcp_input.c tcp_newreno_mark_lost), and a retransmission timeout
        # marks every unacknowledged segment lost (tcp_timeout_mark_lost), since none
        # is known to have arrived. Not measured: it needs loss, and netem is absent.
        return (
            "off: the peer acknowledges only in order: recovery resends one lost segment "
            "per round trip (NewReno), and after a retransmission timeout the whole "
            "unacknowledged tail, segments the peer already holds included"
        )
    return "offered in every SYN: the peer can report which segments arrived"


@rule("net.ipv4.tcp_adv_win_scale")
def tcp_adv_win_scale(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_adv_win_scale"))
    if kernel_at_least(6, 6):
        return (
            f"obsolete since Linux 6.6: {v} has no effect; the advertised window follows "
            "the overhead measured on received packets (tp->scaling_ratio)"
        )
    share = f"1/{2**v}" if v > 0 else f"all but 1/{2**-v}" if v < 0 else "none"
    return f"{share} of the receive buffer is counted as overhead, not window"


def kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel's release is major.minor or later (False off Linux)."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release if hasattr(os, "uname") else "")
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (major, minor)


# -- sending and receiving --------------------------------------------------------------------
@rule("net.ipv4.tcp_autocorking")
def tcp_autocorking(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_autocorking"))
    if v == 0:
        return "off: each small write leaves as soon as Nagle allows"
    return (
        "on: a small write waits while an earlier packet of this socket is still in the "
        "qdisc or device queue"
    )


@rule("net.ipv4.tcp_notsent_lowat")
def tcp_notsent_lowat(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_notsent_lowat"))
    if v >= 2**31 - 1 or v <= 0:
        return (
            "no limit: poll() reports writable while SO_SNDBUF has room (TCP_NOTSENT_LOWAT unset)"
        )
    return f"poll() reports a socket writable only while under {v:,} B are unsent"


@rule("net.ipv4.tcp_slow_start_after_idle")
def tcp_slow_start_after_idle(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_slow_start_after_idle"))
    if v == 0:
        return "off: a connection keeps its congestion window across idle periods"
    return (
        "a connection idle longer than its RTO has its congestion window halved per idle "
        "RTO, down to the initial window (tcp_cwnd_restart)"
    )


@rule("net.ipv4.tcp_moderate_rcvbuf")
def tcp_moderate_rcvbuf(s: Settings) -> str:
    v = _need(s.int("net.ipv4.tcp_moderate_rcvbuf"))
    rmem = s.ints("net.ipv4.tcp_rmem")
    top = f" up to {rmem[2]:,} B" if len(rmem) == 3 else ""
    if v == 0:
        return "off: a TCP receive buffer stays at its initial size"
    return f"a TCP receive buffer grows with the transfer{top}, unless SO_RCVBUF was set on it"


@rule("net.ipv4.tcp_congestion_control")
def tcp_congestion_control(s: Settings) -> str:
    return f"new TCP sockets start with {_need_text(s, 'net.ipv4.tcp_congestion_control')}"


@rule("net.ipv4.tcp_available_congestion_control")
def tcp_available_congestion_control(s: Settings) -> str:
    v = _need_text(s, "net.ipv4.tcp_available_congestion_control").split()
    return f"{len(v)} loaded; TCP_CONGESTION can pick one of them"


@rule("net.ipv4.tcp_allowed_congestion_control")
def tcp_allowed_congestion_control(s: Settings) -> str:
    v = _need_text(s, "net.ipv4.tcp_allowed_congestion_control").split()
    return f"{len(v)} may be set with TCP_CONGESTION without CAP_NET_ADMIN: {', '.join(v)}"


def _need_text(s: Settings, name: str) -> str:
    v = s.text(name)
    if v is None:
        raise ValueError(name)
    return v


# -- ports and addresses -------------------------------------------------------------------
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


@rule("net.ipv4.ip_local_port_range")
def ip_local_port_range(s: Settings) -> str:
    lo, hi = s.ints("net.ipv4.ip_local_port_range")
    res = reserved_ports(s.text("net.ipv4.ip_local_reserved_ports") or "")
    return (
        f"bind(port 0) and connect() pick from {hi - lo + 1 - res:,} ports ({lo}-{hi}"
        + (f", minus {res:,} reserved" if res else "")
        + ")"
    )


@rule("net.ipv4.ip_local_reserved_ports")
def ip_local_reserved_ports(s: Settings) -> str:
    n = reserved_ports(s.text("net.ipv4.ip_local_reserved_ports") or "")
    if n == 0:
        return "none reserved"
    return f"{n:,} ports skipped by bind(port 0) and connect(); an explicit bind() still works"


@rule("net.ipv4.ip_unprivileged_port_start")
def ip_unprivileged_port_start(s: Settings) -> str:
    v = _need(s.int("net.ipv4.ip_unprivileged_port_start"))
    if v == 0:
        return "every port may be bound without CAP_NET_BIND_SERVICE"
    return f"ports below {v} need CAP_NET_BIND_SERVICE (root)"


@rule("net.ipv4.ip_nonlocal_bind")
def ip_nonlocal_bind(s: Settings) -> str:
    v = _need(s.int("net.ipv4.ip_nonlocal_bind"))
    if v == 0:
        return "bind() to an IPv4 address no interface has fails with EADDRNOTAVAIL"
    return "bind() to an IPv4 address no interface has succeeds (IP_FREEBIND for every socket)"


@rule("net.ipv6.bindv6only")
def bindv6only(s: Settings) -> str:
    v = _need(s.int("net.ipv6.bindv6only"))
    if v == 0:
        return "a new IPv6 socket is dual-stack: [::]:p also holds IPv4 port p"
    return "a new IPv6 socket is IPv6-only: [::]:p leaves IPv4 port p free"


# -- buffers ----------------------------------------------------------------------------------
@rule("net.core.rmem_default")
def rmem_default(s: Settings) -> str:
    v = _need(s.int("net.core.rmem_default"))
    return f"a new UDP or UNIX socket's SO_RCVBUF is {v:,} B (payload plus per-packet overhead)"


@rule("net.core.wmem_default")
def wmem_default(s: Settings) -> str:
    v = _need(s.int("net.core.wmem_default"))
    return f"a new UDP or UNIX socket's SO_SNDBUF is {v:,} B"


@rule("net.core.rmem_max")
def rmem_max(s: Settings) -> str:
    v = _need(s.int("net.core.rmem_max"))
    return f"setsockopt(SO_RCVBUF, n) keeps min(n, {v:,}) and doubles it: at most {2 * v:,} B"


@rule("net.core.wmem_max")
def wmem_max(s: Settings) -> str:
    v = _need(s.int("net.core.wmem_max"))
    return f"setsockopt(SO_SNDBUF, n) keeps min(n, {v:,}) and doubles it: at most {2 * v:,} B"


def _triple(name: str, kind: str, s: Settings) -> str:
    lo, default, hi = s.ints(name)
    return (
        f"a new TCP socket starts at {default:,} B; {kind} autotuning moves it within "
        f"{lo:,}-{hi:,} B"
    )


@rule("net.ipv4.tcp_rmem")
def tcp_rmem(s: Settings) -> str:
    return _triple("net.ipv4.tcp_rmem", "receive", s)


@rule("net.ipv4.tcp_wmem")
def tcp_wmem(s: Settings) -> str:
    return _triple("net.ipv4.tcp_wmem", "send", s)


def _page() -> int:
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@rule("net.ipv4.udp_mem")
def udp_mem(s: Settings) -> str:
    """net/core/sock.c __sk_mem_raise_allocated(): at or below udp_mem[0] every charge
    succeeds; above udp_mem[2] none does; in between, a receive is granted only while the
    socket holds less than udp_rmem_min (sk_get_rmem0), since udp_prot has no
    memory_pressure hook to let it go on (net/ipv4/udp.c udp_prot), so the middle value,
    which calls sk_enter_memory_pressure(), does nothing for UDP (udp(7): it follows
    tcp_mem's format). Not measured: udp_mem exists only in the initial namespace, and
    raising UDP memory past it would starve every UDP socket of the host."""
    lo, _mid, hi = (x * _page() / 2**20 for x in s.ints("net.ipv4.udp_mem"))
    rmin = s.int("net.ipv4.udp_rmem_min")
    floor = f"{rmin:,} B (udp_rmem_min)" if rmin is not None else "udp_rmem_min"
    return (
        f"all UDP sockets of the host together: past {lo:,.0f} MiB each socket may queue "
        f"only up to {floor}, past {hi:,.0f} MiB nothing more is queued (drops counted as "
        "MemErrors in /proc/net/snmp: __udp_queue_rcv_skb); the middle value does nothing "
        "for UDP; below the first, a socket's limit is its SO_RCVBUF"
    )


@rule("net.ipv4.udp_rmem_min")
def udp_rmem_min(s: Settings) -> str:
    v = _need(s.int("net.ipv4.udp_rmem_min"))
    return (
        f"while the host's UDP memory is above udp_mem's first value, a UDP socket still "
        f"queues a datagram when it holds less than {v:,} B (sk_get_rmem0); otherwise it "
        "has no effect"
    )


@rule("net.unix.max_dgram_qlen")
def max_dgram_qlen(s: Settings) -> str:
    v = _need(s.int("net.unix.max_dgram_qlen"))
    return (
        f"a UNIX datagram socket queues {v + 1:,} datagrams from senders it is not connected "
        "back to, then they block or get EAGAIN (a socketpair's peer is limited by "
        "SO_SNDBUF only)"
    )
