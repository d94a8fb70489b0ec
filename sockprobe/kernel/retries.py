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

Keepalive (tcp_keepalive_timer()): the first probe goes out when the connection has been
idle for TCP_KEEPIDLE (tcp_keepalive_time), one more every TCP_KEEPINTVL, and the timer
that finds TCP_KEEPCNT (tcp_keepalive_probes) probes unanswered aborts the connection:
idle + intvl x cnt after the last segment received. The timer does nothing while data is
in flight or queued (`packets_out || !tcp_write_queue_empty`), which is why keepalive
never fires against a zero-window peer with a blocked writer.
"""

from __future__ import annotations

from dataclasses import dataclass

#: include/net/tcp.h: TCP_RTO_MIN is HZ / 5, TCP_RTO_MAX 120 s (the default of
#: net.ipv4.tcp_rto_max_ms where that sysctl exists).
TCP_RTO_MIN_MS = 200
TCP_RTO_MAX_MS = 120_000


def _ilog2(n: int) -> int:
    return n.bit_length() - 1 if n > 0 else 0


def model_timeout_ms(
    boundary: int, rto_base_ms: int = TCP_RTO_MIN_MS, rto_max_ms: int = TCP_RTO_MAX_MS
) -> int:
    """tcp_model_timeout(): the time `boundary` retransmissions take from rto_base with
    exponential backoff capped at rto_max, in ms (15 -> 924,600 ms)."""
    thresh = _ilog2(rto_max_ms // rto_base_ms)
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base_ms
    return ((2 << thresh) - 1) * rto_base_ms + (boundary - thresh) * rto_max_ms


@dataclass(frozen=True)
class GiveUp:
    """When a connection whose data is never acknowledged is aborted."""

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
    rto_base_ms: int = TCP_RTO_MIN_MS,
    linear: int = 0,
    from_send: bool = False,
) -> GiveUp:
    """Walk the retransmission timer until a firing finds the budget used up: that
    firing aborts instead of retransmitting (tcp_write_timeout() runs first).

    - `first_ms`: when the timer sent the first retransmission, after the original send
      (default `rto_ms`; on loopback a tail loss probe, tcp_send_loss_probe(), usually
      goes first and the first timer retransmission comes one RTO after it, so the probe
      passes the time it measured);
    - the budget is counted from `retrans_stamp`: for data, tcp_retransmit_skb() sets it
      when the timer's first retransmission leaves (the loss probe goes through
      __tcp_retransmit_skb() and does not); for a SYN, tcp_connect() sets it when the SYN
      is sent (`from_send`);
    - after the first retransmission the timeout is doubled at each firing, capped at
      rto_max, except that the first `linear` retransmissions keep it
      (tcp_syn_linear_timeouts for a SYN, Linux 6.10+; 0 for data).
    """
    budget = model_timeout_ms(retries, rto_base_ms, rto_max_ms)
    first = float(rto_ms if first_ms is None else first_ms)
    start = 0.0 if from_send else first
    t, sent = first, 1
    timeout = float(rto_ms) if sent <= linear else min(2.0 * rto_ms, float(rto_max_ms))
    # Bounded: every step adds at least rto_ms (> 0) until t - start >= budget.
    while True:
        t += timeout
        if t - start >= budget:
            return GiveUp(budget, round(t), sent)
        sent += 1
        if sent > linear:
            timeout = min(timeout * 2, float(rto_max_ms))


#: include/net/tcp.h TCP_TIMEOUT_INIT: the initial RTO of a SYN (1 s, RFC 6298).
TCP_TIMEOUT_INIT_MS = 1000


def syn_give_up(syn_retries: int, linear_timeouts: int = 0) -> GiveUp:
    """When connect() to a silent address fails: for SYN_SENT, retransmits_timed_out()
    builds the budget from tcp_timeout_init() (1 s) instead of TCP_RTO_MIN, and the
    first tcp_syn_linear_timeouts retransmissions keep the 1 s timeout
    (tcp_retransmit_timer()). 6 and 4 give 131 s after 10 SYN retransmissions."""
    return give_up(
        syn_retries,
        TCP_TIMEOUT_INIT_MS,
        rto_base_ms=TCP_TIMEOUT_INIT_MS,
        linear=linear_timeouts,
        from_send=True,
    )


def keepalive_abort_s(idle_s: float, intvl_s: float, cnt: int) -> float:
    """Seconds from the last segment received to the keepalive abort (ETIMEDOUT)."""
    return idle_s + intvl_s * cnt


def retransmissions_by(
    t_ms: float, rto_ms: float, first_ms: float | None = None, rto_max_ms: int = TCP_RTO_MAX_MS
) -> int:
    """How many retransmissions the timer has sent `t_ms` after the original send: the
    first at `first_ms` (default one RTO), then after 2, 4, 8... RTOs, capped at rto_max."""
    t = float(rto_ms if first_ms is None else first_ms)
    timeout, sent = min(2.0 * rto_ms, float(rto_max_ms)), 0
    while rto_ms > 0 and t <= t_ms:
        sent += 1
        t += timeout
        timeout = min(timeout * 2, float(rto_max_ms))
    return sent
