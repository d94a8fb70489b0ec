"""The kernel's rules for when TCP gives up on a silent peer, as functions of its settings.

These are pure functions (no sockets): `sockprobe dead-peer` feeds them the sysctls it
read and the RTO it measured, prints what they predict, and its tests compare the
prediction with a measurement.

tcp_retries2 is not a count but a time budget. net/ipv4/tcp_timer.c, tcp_write_timeout()
asks retransmits_timed_out(sk, tcp_retries2, icsk_user_timeout). With no TCP_USER_TIMEOUT
that function turns the count into a duration with tcp_model_timeout(): the time that
`boundary` retransmissions would take starting from TCP_RTO_MIN (200 ms, not the
connection's own RTO; an established socket's rto_base is the constant) with the timeout
doubling each time until it reaches the maximum RTO (TCP_RTO_MAX, 120 s; since Linux 6.15
tcp_rto_max(sk), i.e. net.ipv4.tcp_rto_max_ms or the TCP_RTO_MAX_MS option):

    thresh = ilog2(rto_max / rto_base)
    boundary <= thresh:  ((2 << boundary) - 1) * rto_base
    otherwise:           ((2 << thresh) - 1) * rto_base + (boundary - thresh) * rto_max

The connection is then aborted (ETIMEDOUT) by the first retransmission timer that fires
once `retrans_stamp` is at least that long ago; the timer runs on the connection's own
RTO, doubled per backoff and capped at rto_max (tcp_retransmit_timer()). For data,
retrans_stamp is the time of the timer's first retransmission, not of the original send,
and the abort waits for the next firing after the budget: measured in a namespace with
tcp_retries2 2 and 3 (budgets 1.4 s and 3.0 s), the aborts came at 3.3 s and 6.7 s, where
give_up() puts them. For the default 15 the budget ends within a fraction of a second of
the 15th firing, so whether the abort comes there (about 926 s) or one 120 s timer later
depends on how late the timers fire; the sentences use kernel/rules.py
retransmit_outcome(), which states that range.

The formulas themselves live in kernel/rules.py (model_timeout, retransmit_schedule,
syn_schedule, keepalive_dead_after), which `sockprobe kernel` also uses: this module only
expresses them in milliseconds with the probe's measured inputs (the RTO, the time of the
first timer retransmission), so there is one model of these timers.

Keepalive (tcp_keepalive_timer()): the first probe goes out when the connection has been
idle for TCP_KEEPIDLE (tcp_keepalive_time), one more every TCP_KEEPINTVL, and the timer
that finds TCP_KEEPCNT (tcp_keepalive_probes) probes unanswered aborts the connection:
idle + intvl x cnt after the last segment received. The timer does nothing while data is
in flight or queued (`packets_out || !tcp_write_queue_empty`), which is why keepalive
never fires against a zero-window peer with a blocked writer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.kernel import rules

#: include/net/tcp.h: TCP_RTO_MIN is HZ / 5, TCP_RTO_MAX 120 s (the default of
#: net.ipv4.tcp_rto_max_ms where that sysctl exists); the values are rules.py's.
TCP_RTO_MIN_MS = round(rules.TCP_RTO_MIN_S * 1000)
TCP_RTO_MAX_MS = round(rules.TCP_RTO_MAX_S * 1000)
#: include/net/tcp.h TCP_TIMEOUT_INIT: the initial RTO of a SYN (1 s, RFC 6298).
TCP_TIMEOUT_INIT_MS = round(rules.TCP_TIMEOUT_INIT_S * 1000)


def model_timeout_ms(
    boundary: int, rto_base_ms: int = TCP_RTO_MIN_MS, rto_max_ms: int = TCP_RTO_MAX_MS
) -> int:
    """tcp_model_timeout() in ms (rules.model_timeout()): the time `boundary`
    retransmissions take from rto_base with exponential backoff capped at rto_max
    (15 -> 924,600 ms)."""
    return round(rules.model_timeout(boundary, rto_base_ms / 1000, rto_max_ms / 1000) * 1000)


@dataclass(frozen=True)
class GiveUp:
    """When a connection whose data (or SYN) is never acknowledged is aborted."""

    #: The budget retransmits_timed_out() compares against (tcp_model_timeout), ms.
    budget_ms: int
    #: The retransmission timer firing that aborts: its time after the first send, ms.
    abort_ms: int
    #: Retransmissions sent before the abort.
    retransmissions: int


def give_up(
    retries: int,
    rto_ms: float,
    *,
    first_ms: float | None = None,
    rto_max_ms: int = TCP_RTO_MAX_MS,
) -> GiveUp:
    """rules.retransmit_schedule() with the timers firing on time, in ms: the firing
    that finds the budget used up aborts instead of retransmitting (tcp_write_timeout()
    runs first).

    `first_ms` is when the timer sent the first retransmission, after the original send
    (default `rto_ms`). On loopback a tail loss probe (tcp_send_loss_probe()) usually goes
    first and the first timer retransmission comes one RTO after it, so the probe passes
    the time it measured. The budget counts from `retrans_stamp`, which
    tcp_retransmit_skb() sets when that first timer retransmission leaves (the loss probe
    goes through __tcp_retransmit_skb() and does not set it).
    """
    first = None if first_ms is None else first_ms / 1000
    sch = rules.retransmit_schedule(
        retries, rto_ms / 1000, rto_max_ms / 1000, late=1.0, first=first
    )
    return GiveUp(
        model_timeout_ms(retries, TCP_RTO_MIN_MS, rto_max_ms),
        round(sch.gives_up_s * 1000),
        sch.retransmissions,
    )


def syn_give_up(
    syn_retries: int, linear_timeouts: int = 0, rto_max_ms: int = TCP_RTO_MAX_MS
) -> GiveUp:
    """When connect() to a silent address fails (rules.syn_schedule()): for SYN_SENT,
    retransmits_timed_out() builds the budget from tcp_timeout_init() (1 s) instead of
    TCP_RTO_MIN and counts it from the first SYN; the first tcp_syn_linear_timeouts
    retransmissions keep the 1 s timeout (tcp_retransmit_timer()), and tcp_write_timeout()
    also stops after syn_retries + linear_timeouts retransmissions. 6 and 4 give 131 s
    after 10 SYN retransmissions."""
    sch = rules.syn_schedule(syn_retries, linear_timeouts, rto_max=rto_max_ms / 1000)
    return GiveUp(
        model_timeout_ms(syn_retries, TCP_TIMEOUT_INIT_MS, rto_max_ms),
        round(sch.gives_up_s * 1000),
        sch.retransmissions,
    )


def keepalive_abort_s(idle_s: int, intvl_s: int, cnt: int) -> float:
    """Seconds from the last segment received to the keepalive abort (ETIMEDOUT):
    rules.keepalive_dead_after()."""
    return float(rules.keepalive_dead_after(idle_s, intvl_s, cnt))


def retransmissions_by(
    t_ms: float,
    retries: int,
    rto_ms: float,
    first_ms: float | None = None,
    rto_max_ms: int = TCP_RTO_MAX_MS,
) -> int:
    """How many retransmissions the timer has sent `t_ms` after the original send, on the
    schedule give_up() walks (the first at `first_ms`, then after 2, 4, 8... RTOs, capped
    at rto_max; none after the abort)."""
    first = None if first_ms is None else first_ms / 1000
    sch = rules.retransmit_schedule(
        retries, rto_ms / 1000, rto_max_ms / 1000, late=1.0, first=first
    )
    return sum(1 for s in sch.sends if s * 1000 <= t_ms)
