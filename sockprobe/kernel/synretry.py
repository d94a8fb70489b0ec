"""When connect() retransmits its SYN and when it gives up: the kernel's rule as functions.

net.ipv4.tcp_syn_retries (or TCP_SYNCNT per socket) is a time budget, not a count. The
retransmission timer of a socket in SYN_SENT (net/ipv4/tcp_timer.c) does two things each
time it fires:

- `tcp_write_timeout()` asks `retransmits_timed_out()` whether the time since the first
  SYN has reached the budget `tcp_model_timeout()` computes for `retries`: the time
  `retries` doubling timeouts would take from the initial RTO, `(2^(retries+1) - 1) x
  rto` while that stays under TCP_RTO_MAX (120 s), plus TCP_RTO_MAX per retry after that.
  If so, the connect fails with ETIMEDOUT and nothing is sent;
- otherwise it retransmits the SYN and, once more than `tcp_syn_linear_timeouts` (Linux
  6.5+; 4 by default) timeouts have fired, doubles the timer (`tcp_retransmit_timer()`:
  the `total_rto > sysctl_tcp_syn_linear_timeouts` test); before that it keeps it at the
  initial RTO.

So linear timeouts add retransmissions, not time, and the give-up instant is the first
timer expiry at or after the budget, which need not be the budget itself:
defaults 6/4 -> SYNs at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s and ETIMEDOUT at 131 s;
2/4 -> five retransmissions, ETIMEDOUT at 7 s; 1/0 -> one retransmission, ETIMEDOUT at 3 s;
2/1 -> SYNs at 1, 2, 4 s and ETIMEDOUT at 8 s (past the 7 s budget).

The initial RTO of a SYN is TCP_TIMEOUT_INIT, 1 s (RFC 6298).

The arithmetic lives once, in kernel/rules.py (shared with the kernel-settings probe);
this module is the interface the backlog and timeouts probes use, with the sentence
they print and the TCP_DEFER_ACCEPT conversions.
"""

from __future__ import annotations

from sockprobe.kernel import rules

#: TCP_TIMEOUT_INIT: the SYN's initial retransmission timeout, seconds.
INITIAL_RTO = rules.TCP_TIMEOUT_INIT_S
#: TCP_RTO_MAX: the retransmission timer never grows past this, seconds.
RTO_MAX = rules.TCP_RTO_MAX_S


def syn_budget(retries: int, rto: float = INITIAL_RTO, rto_max: float = RTO_MAX) -> float:
    """`tcp_model_timeout()`: the time `retries` doubling timeouts take from `rto`
    (kernel/rules.py model_timeout()).

    >>> syn_budget(6), syn_budget(2), syn_budget(1)
    (127.0, 7.0, 3.0)
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, not {retries}")
    return rules.model_timeout(retries, rto, rto_max)


def syn_schedule(
    retries: int, linear: int, rto: float = INITIAL_RTO, rto_max: float = RTO_MAX
) -> list[float]:
    """Seconds after connect() at which the SYN is retransmitted (kernel/rules.py
    syn_schedule(), the one implementation of the rule).

    >>> syn_schedule(6, 4)
    [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0]
    >>> syn_schedule(2, 4), syn_schedule(1, 0), syn_schedule(2, 1)
    ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0], [1.0, 2.0, 4.0])
    """
    return list(rules.syn_schedule(retries, linear, rto, rto_max).sends)


def connect_gives_up_after(
    retries: int, linear: int, rto: float = INITIAL_RTO, rto_max: float = RTO_MAX
) -> float:
    """Seconds after connect() at which an unanswered connect fails with ETIMEDOUT: the
    first timer expiry at or after the budget.

    >>> connect_gives_up_after(6, 4), connect_gives_up_after(2, 4), connect_gives_up_after(2, 1)
    (131.0, 7.0, 8.0)
    """
    return rules.syn_schedule(retries, linear, rto, rto_max).gives_up_s


def describe(retries: int, linear: int | None, rto: float = INITIAL_RTO) -> str:
    """The sentence for a settings row: what these two values make connect() do here.
    `linear` None: the kernel has no tcp_syn_linear_timeouts (before 6.5), every timeout
    doubles."""
    lin = 0 if linear is None else linear
    times = syn_schedule(retries, lin, rto)
    give_up = connect_gives_up_after(retries, lin, rto)
    n = len(times)
    shown = ", ".join(f"{t:g}" for t in times) or "none"
    return (
        f"an unanswered connect() retransmits its SYN {n} time{'s' if n != 1 else ''} "
        f"(at {shown} s) and fails with ETIMEDOUT after {give_up:g} s: the budget is "
        f"{syn_budget(retries, rto):g} s ((2^({retries}+1) - 1) x the {rto:g} s initial RTO)"
        + (
            f", and the initial timeout and the {lin} after it stay at {rto:g} s"
            if lin
            else ", every timeout doubling"
        )
    )


def defer_accept_retransmits(seconds: int, rto: float = INITIAL_RTO) -> int:
    """TCP_DEFER_ACCEPT's seconds as the kernel stores them: the number of SYN-ACK
    retransmissions whose doubling timeouts first cover them (`secs_to_retrans()`,
    net/ipv4/tcp.c). The value read back is that count turned back into seconds.

    >>> defer_accept_retransmits(1), defer_accept_retransmits(3), defer_accept_retransmits(5)
    (1, 2, 3)
    """
    if seconds <= 0:
        return 0
    n, timeout, period = 1, rto, rto
    while seconds > period and n < 255:
        timeout = min(timeout * 2, RTO_MAX)
        period += timeout
        n += 1
    return n


def defer_accept_promotes_after(seconds: int, rto: float = INITIAL_RTO) -> float:
    """When a client that completed the handshake but sent nothing becomes acceptable
    under TCP_DEFER_ACCEPT: its bare ACKs are dropped (`tcp_check_req()`) until the
    request's SYN-ACK has been retransmitted `defer_accept_retransmits()` times; the
    client's answer to that last SYN-ACK then creates the connection.

    >>> defer_accept_promotes_after(1), defer_accept_promotes_after(3)
    (1.0, 3.0)
    """
    n = defer_accept_retransmits(seconds, rto)
    t, timeout = 0.0, rto
    for _ in range(n):
        t += timeout
        timeout = min(timeout * 2, RTO_MAX)
    return t


def synack_schedule(retries: int, rto: float = INITIAL_RTO) -> tuple[list[float], float]:
    """(SYN-ACK resend times, time the request is dropped) for a half-open request whose
    final ACK never comes (kernel/rules.py synack_schedule(): `reqsk_timer_handler()`
    resends on a doubling timer and drops the request once it has fired `retries` times,
    net.ipv4.tcp_synack_retries or the listener's TCP_SYNCNT, without telling the client).

    >>> synack_schedule(1), synack_schedule(2), synack_schedule(5)[1]
    (([1.0], 3.0), ([1.0, 3.0], 7.0), 63.0)
    """
    sch = rules.synack_schedule(retries, rto)
    return list(sch.sends), sch.gives_up_s
