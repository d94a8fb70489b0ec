"""What a Linux listener does with a packet that meets a full accept queue, as functions
of the settings that decide it (net.ipv4.tcp_abort_on_overflow, net.ipv4.tcp_syncookies).

Three packets can meet a full accept queue (one holding more than the backlog:
`sk_acceptq_is_full()`, include/net/sock.h), and each has its own fate:

- a SYN: `tcp_conn_request()` (net/ipv4/tcp_input.c) checks the accept queue before
  anything else and drops the SYN (ListenOverflows, ListenDrops). No request is made, so
  tcp_abort_on_overflow has nothing to reset: the client retransmits its SYN;
- the final ACK of a half-open request the listener kept (a SYN_RECV request socket):
  `tcp_check_req()` (net/ipv4/tcp_minisocks.c) fails to create the child
  (`tcp_v4_syn_recv_sock()` -> exit_overflow) and then either drops the ACK and keeps the
  request (`inet_rsk(req)->acked = 1`, tcp_abort_on_overflow 0: the client, ESTABLISHED on
  its side, retransmits and gets in once there is room) or, with tcp_abort_on_overflow 1,
  answers with RST (`embryonic_reset`): the client's next call fails with ECONNRESET;
- the final ACK of a SYN cookie (`cookie_v4_check()`, net/ipv4/syncookies.c): there is no
  request to keep or reset; when the child cannot be created the ACK is dropped silently,
  whatever tcp_abort_on_overflow says. The client is ESTABLISHED on its side only.

Whether a SYN is answered with a cookie or a kept request depends on tcp_syncookies: 2
always sends cookies; 1 sends them once the listener's half-open requests exceed its
backlog (`inet_csk_reqsk_queue_is_full()`); 0 drops such SYNs instead. The backlog, not
net.ipv4.tcp_max_syn_backlog, bounds half-open requests; tcp_max_syn_backlog matters only
with syncookies 0, where `tcp_conn_request()` drops SYNs from peers without TCP metrics
history (`tcp_peer_is_proven()`) once fewer than a quarter of tcp_max_syn_backlog slots
are left free.
"""

from __future__ import annotations

SYN = "syn"
REQUEST_ACK = "request_ack"
COOKIE_ACK = "cookie_ack"
PATHS = (SYN, REQUEST_ACK, COOKIE_ACK)

DROPPED = "dropped"
RESET = "reset"


def at_full_queue(path: str, abort_on_overflow: int) -> str:
    """DROPPED or RESET: what the listener does with `path` at a full accept queue.

    >>> at_full_queue(REQUEST_ACK, 1), at_full_queue(COOKIE_ACK, 1), at_full_queue(SYN, 1)
    ('reset', 'dropped', 'dropped')
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}")
    if path == REQUEST_ACK and abort_on_overflow == 1:
        return RESET
    return DROPPED


def syn_answer(half_open: int, backlog: int, syncookies: int) -> str:
    """How a SYN is answered while the accept queue has room: "request" (a half-open
    request is kept), "cookie" (a SYN cookie, nothing kept) or "dropped".

    >>> syn_answer(0, 0, 1), syn_answer(1, 0, 1), syn_answer(1, 0, 0), syn_answer(0, 8, 2)
    ('request', 'cookie', 'dropped', 'cookie')
    """
    if syncookies == 2:
        return "cookie"
    if half_open > backlog:
        return "cookie" if syncookies == 1 else DROPPED
    return "request"


def max_syn_backlog_floor(max_syn_backlog: int) -> int:
    """The half-open count above which, with syncookies 0, SYNs from unproven peers are
    dropped: `max_syn_backlog - qlen < max_syn_backlog >> 2`.

    >>> max_syn_backlog_floor(2048), max_syn_backlog_floor(16)
    (1536, 12)
    """
    return max_syn_backlog - (max_syn_backlog >> 2)


def overflow_sentences(abort_on_overflow: int | None, syncookies: int | None) -> list[str]:
    """The sentences the backlog probe prints about a full accept queue, one per path,
    from the two settings (None: not readable, the sentence says so)."""
    abort = 0 if abort_on_overflow is None else abort_on_overflow
    head = (
        f"net.ipv4.tcp_abort_on_overflow is {abort_on_overflow}"
        if abort_on_overflow is not None
        else "net.ipv4.tcp_abort_on_overflow is not readable (taken as 0)"
    )
    out = [
        f"{head}: a SYN that meets a full accept queue is dropped all the same (no request "
        "exists to reset), and the client retransmits it.",
    ]
    if syncookies == 2:
        out.append(
            "net.ipv4.tcp_syncookies is 2: every SYN is answered with a cookie and no "
            "half-open request is kept, so tcp_abort_on_overflow never resets anything; a "
            "cookie's final ACK that meets a full queue is dropped silently and the client "
            "is ESTABLISHED on its side only."
        )
        return out
    if abort == 1:
        out.append(
            "A half-open request whose final ACK meets a full queue is answered with RST: "
            "the client, ESTABLISHED on its side, gets ECONNRESET from its next call."
        )
    else:
        out.append(
            "A half-open request whose final ACK meets a full queue keeps waiting: the ACK "
            "is dropped, the client is ESTABLISHED on its side, and its retransmission "
            "gets it in once accept() makes room."
        )
    if syncookies == 1:
        out.append(
            "net.ipv4.tcp_syncookies is 1: once half-open requests exceed the backlog, SYNs "
            "get cookies; a cookie's final ACK that meets a full queue is dropped silently "
            f"{'even with' if abort == 1 else 'as with'} tcp_abort_on_overflow {abort}."
        )
    else:
        out.append(
            f"net.ipv4.tcp_syncookies is {syncookies}: no cookies; once half-open requests "
            "exceed the backlog, further SYNs are dropped."
        )
    return out


def half_open_held(backlog: int, max_syn_backlog: int, syncookies: int) -> int | None:
    """How many half-open requests a listener keeps before it drops further SYNs from
    peers without metrics history, with syncookies 0: a SYN is taken while the requests
    do not exceed the backlog (`inet_csk_reqsk_queue_is_full()`) and at least a quarter
    of tcp_max_syn_backlog is free. None with syncookies on (cookies answer instead).

    >>> half_open_held(64, 16, 0), half_open_held(4, 16, 0), half_open_held(64, 16, 1)
    (13, 5, None)
    """
    if syncookies != 0:
        return None
    return min(backlog, max_syn_backlog_floor(max_syn_backlog)) + 1
