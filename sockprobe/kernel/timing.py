"""The kernel's timing rules as arithmetic: retransmission and SYN schedules, their
budgets (tcp_model_timeout), the timer wheel's slack, FIN_WAIT2 lifetimes, listen()
admission, keepalive. Pure functions of the settings (no sockets), each following the
kernel source named beside it; kernel/rules.py turns them into the sentences of
`sockprobe kernel`, and probes and tests use the numbers directly."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: include/net/tcp.h: the initial SYN (and SYN-ACK) timeout, 1 s (RFC 6298).
TCP_TIMEOUT_INIT_S = 1.0
#: include/net/tcp.h: TCP_RTO_MIN (200 ms). retransmits_timed_out() uses this constant,
#: not the tcp_rto_min_us sysctl, as the base of an established connection's budget.
TCP_RTO_MIN_S = 0.2
#: include/net/tcp.h: TCP_RTO_MAX, 120 s (tcp_rto_max_ms lowers it per namespace, 6.15+:
#: both the backoff and the budgets of tcp_model_timeout follow it, measured).
TCP_RTO_MAX_S = 120.0
#: include/net/tcp.h: TCP_TIMEWAIT_LEN, 60 s, compiled in.
TCP_TIMEWAIT_LEN_S = 60.0


def model_timeout(boundary: int, rto_base: float, rto_max: float = TCP_RTO_MAX_S) -> float:
    """tcp_timer.c tcp_model_timeout(): the time `boundary` retransmissions would take if
    the timeout doubled from `rto_base` up to the RTO cap (TCP_RTO_MAX, or tcp_rto_max_ms
    where the kernel has it: measured, a 1 s cap shrinks tcp_retries2 6 from 25.4 s to
    5.4 s). This is the time budget that
    retransmits_timed_out() compares with the time since the first transmission."""
    thresh = int(math.log2(rto_max / rto_base)) if rto_base > 0 else 0
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * rto_max


@dataclass(frozen=True)
class Schedule:
    """When each retransmission leaves (s after the first transmission) and when the
    kernel gives up (ETIMEDOUT)."""

    sends: tuple[float, ...]
    gives_up_s: float

    @property
    def retransmissions(self) -> int:
        return len(self.sends)


def syn_schedule(
    retries: int, linear: int, rto: float = TCP_TIMEOUT_INIT_S, rto_max: float = TCP_RTO_MAX_S
) -> Schedule:
    """An unanswered connect()'s SYN retransmissions and ETIMEDOUT (Linux 6.5+).

    tcp_write_timeout(): in SYN_SENT it gives up when icsk_retransmits reaches
    syn_retries + syn_linear_timeouts, or when the time since the first SYN reaches
    tcp_model_timeout(syn_retries, initial RTO), whichever comes first; it is checked each
    time the timer fires, before the retransmission. tcp_retransmit_timer(): the timeout
    stays at the initial RTO while total_rto <= syn_linear_timeouts, then doubles (capped
    at TCP_RTO_MAX). `retries` is TCP_SYNCNT when the socket sets it, else tcp_syn_retries.

    >>> syn_schedule(6, 4).sends
    (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0)
    >>> syn_schedule(6, 4).gives_up_s, syn_schedule(2, 4).gives_up_s
    (131.0, 7.0)
    """
    max_retx = retries + linear
    budget = model_timeout(retries, rto, rto_max)
    t, cur = 0.0, rto
    sends: list[float] = []
    while True:
        t += cur
        if len(sends) >= max_retx or (sends and t >= budget - 1e-9):
            return Schedule(tuple(round(x, 3) for x in sends), round(t, 3))
        sends.append(t)
        if len(sends) > linear:
            cur = min(cur * 2, rto_max)


#: Linux timers never fire early and usually a little late: jiffies, and the timer wheel
#: (kernel/time/timer.c) rounds a timeout up to its level's granularity. LATE_MAX (1/8)
#: bounds that for any timeout (the ratio is largest at the start of a level) and serves
#: the tests' margins; timer_slack() gives the bound for one timeout.
LATE_MIN, LATE_MAX = 1.001, 1.125
#: The kernel's HZ is not visible from user space (USER_HZ is): the slack is taken as the
#: largest over the usual CONFIG_HZ values.
_HZ_CHOICES = (100, 250, 300, 1000)


def timer_slack(seconds: float) -> float:
    """How late the timer wheel may fire a timeout of `seconds` (kernel/time/timer.c:
    level n holds timeouts from 63 << 3(n-1) jiffies and rounds them up to 8**n jiffies,
    calc_index()); the largest over the usual HZ values. A 120 s timer: about 5 s
    (HZ=100), 4.1 s (HZ=1000); a 200 ms one: 8-80 ms."""
    worst = 0.0
    for hz in _HZ_CHOICES:
        j = max(1, math.ceil(seconds * hz))
        level = 0
        while level < 8 and j >= (63 << (3 * level)):
            level += 1
        worst = max(worst, ((8**level) + 1) / hz)
    return worst


def retransmit_schedule(
    retries: int,
    rto: float,
    rto_max: float = TCP_RTO_MAX_S,
    base: float = TCP_RTO_MIN_S,
    late: float = LATE_MIN,
    first: float | None = None,
    slack: bool = False,
) -> Schedule:
    """Unacknowledged data on an established connection (tcp_retries2, orphan retries).

    tcp_write_timeout() -> retransmits_timed_out(): expired when the time since the first
    timeout retransmission (tp->retrans_stamp, set by tcp_retransmit_skb() from the
    segment's new send time) reaches tcp_model_timeout(retries, TCP_RTO_MIN), checked
    each time the retransmission timer fires, before it retransmits. The timer starts at
    the connection's RTO and doubles up to TCP_RTO_MAX (tcp_retransmit_timer). A count
    of retransmissions is never compared. `late` scales every timeout, and `slack` adds
    to each the most the timer wheel may add (timer_slack); a
    tail loss probe (tcp_early_retrans) may add one probe before the first timeout:
    `first`, when given, is when the timer's first retransmission left (measured), and
    the doubling timeouts follow it.
    """
    budget = model_timeout(retries, base, rto_max)
    t, cur = (0.0, rto) if first is None else (first, min(2 * rto, rto_max))
    sends: list[float] = [] if first is None else [first]
    while True:
        t += cur * late + (timer_slack(cur) if slack else 0.0)
        if sends and t - sends[0] >= budget - 1e-9:
            return Schedule(tuple(round(x, 3) for x in sends), round(t, 3))
        sends.append(t)
        cur = min(cur * 2, rto_max)


def retransmit_outcome(retries: int, rto: float, rto_max: float = TCP_RTO_MAX_S) -> str:
    """'fails with ETIMEDOUT at T after N retransmissions', or both outcomes when the
    budget ends within a timer's slack of a timeout (then which one happens depends on
    how late that timer fires)."""
    a = retransmit_schedule(retries, rto, rto_max, late=LATE_MIN)
    b = retransmit_schedule(retries, rto, rto_max, late=LATE_MIN, slack=True)
    first = f"after {_retx(a.retransmissions)}, at about {duration(a.gives_up_s)}"
    if a.retransmissions == b.retransmissions:
        return (
            f"{first} (at most {duration(b.gives_up_s)} if every timer fires as late as the "
            "timer wheel allows)"
        )
    return (
        f"{first}, or after {_retx(b.retransmissions)} at about {duration(b.gives_up_s)}: "
        "the budget ends within a timer's slack of a timeout"
    )


def _retx(n: int) -> str:
    return f"{n} retransmission" if n == 1 else f"{n} retransmissions"


@dataclass(frozen=True)
class FinWait2:
    """An orphaned FIN_WAIT2 socket's life: first on the keepalive timer (only when the
    lifetime exceeds TIME_WAIT's 60 s), then as a FIN_WAIT2 timewait mini-socket."""

    fin_time_s: float
    keepalive_s: float
    minisock_s: float

    @property
    def total_s(self) -> float:
        return self.keepalive_s + self.minisock_s


def fin_wait2(fin_timeout: float, rto: float) -> FinWait2:
    """include/net/tcp.h tcp_fin_time(): max(tcp_fin_timeout, 3.5 x RTO). At or below 60 s
    the orphan becomes a FIN_WAIT2 mini-socket for that long (tcp_rcv_state_process ->
    tcp_time_wait). Above 60 s it first stays a full socket on the keepalive timer for
    fin_time - 60 s; when that fires, tcp_keepalive_timer() turns it into a mini-socket
    for fin_time - 60 s again (raised to 3.5 x RTO by tcp_time_wait()). So 90 gives
    30 + 30 = 60 s, and 62 gives 2 + 2 = 4 s."""
    floor = 3.5 * rto
    tmo = max(float(fin_timeout), floor)
    if tmo > TCP_TIMEWAIT_LEN_S:
        rest = tmo - TCP_TIMEWAIT_LEN_S
        return FinWait2(tmo, rest, max(rest, floor))
    return FinWait2(tmo, 0.0, tmo)


def listen_admits(backlog: int, somaxconn: int) -> int:
    """Connections a listener that never calls accept() completes: the backlog is clamped
    to somaxconn (__sys_listen), and sk_acceptq_is_full() tests `>`, so one more fits."""
    return max(0, min(backlog, somaxconn)) + 1


def keepalive_dead_after(time_s: int, intvl_s: int, probes: int) -> int:
    """tcp_keepalive_timer(): first probe after `time_s` idle, then one every `intvl_s`;
    the connection fails (ETIMEDOUT) when `probes` have gone unanswered, which the timer
    notices `intvl_s` after the last one: time + probes x intvl."""
    return time_s + probes * intvl_s


def orphan_retries(value: int, rto: float, rto_max: float = TCP_RTO_MAX_S) -> int:
    """tcp_timer.c tcp_orphan_retries(): 0 means 8 while the RTO is below TCP_RTO_MAX."""
    return 8 if value == 0 and rto < rto_max else value


# -- formatting ---------------------------------------------------------------------------
def duration(s: float) -> str:
    """7.0 -> '7 s'; 1.764 -> '1.76 s'; 924.6 -> '925 s (15.4 min)'; 7875 -> '7,875 s (2.2 h)'."""
    places = 2 if s < 10 else 1 if s < 100 else 0
    text = f"{s:,.{places}f}".rstrip("0").rstrip(".") if places else f"{s:,.0f}"
    text += " s"
    if s >= 7200:
        return f"{text} ({s / 3600:.1f} h)"
    if s >= 120:
        return f"{text} ({s / 60:.1f} min)"
    return text
