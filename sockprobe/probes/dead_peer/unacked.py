"""Data sent to a vanished peer: how long until the sender is told?

Unacknowledged data starts the retransmission timer. With TCP_USER_TIMEOUT the
connection is aborted once that long has passed since the timer's first retransmission
(retransmits_timed_out() with the user timeout as the budget, counted from retrans_stamp;
tcp_clamp_rto_to_user_timeout() makes the last timer fire on time). On loopback a tail
loss probe goes out first, so that first timer retransmission comes about two RTOs after
the send, and the abort about that much later than the option's value.
With no option the budget is tcp_retries2 turned into time by tcp_model_timeout()
(kernel/retries.py): the probe cannot wait the quarter of an hour the default means, so
it counts the retransmissions TCP_INFO reports within its bound, and computes the give-up
time from the rule, the setting, the RTO and the first retransmission it measured.
"""

from __future__ import annotations

import time

from sockprobe.kernel import deadpeer
from sockprobe.lab import Lab
from sockprobe.probes.dead_peer._case import PAYLOAD, Armed, Case, Outcome, deaf_pair, table
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import Report


def _send_then_recv(lab: Lab, user_timeout: int | None, name: str) -> Armed:
    live, dead = deaf_pair(lab, name)
    if user_timeout is not None:
        deadpeer.set_user_timeout(live, user_timeout)
    t0 = time.perf_counter()
    live.sendall(PAYLOAD)  # 100 B fit in the send buffer: returns at once
    return Armed(live, lambda: live.recv(1), t0, [dead])


def _user_timeout(lab: Lab, p: Params) -> Armed:
    return _send_then_recv(lab, p.user_timeout, "unacked, user timeout")


def _none(lab: Lab, p: Params) -> Armed:
    return _send_then_recv(lab, None, "unacked, no option")


def cases(p: Params, retries2_s: float | None, retries2: int | None) -> list[Case]:
    basis = (
        f"tcp_retries2 {retries2} rule (computed)"
        if retries2 is not None
        else "tcp_retries2 is unreadable here"
    )
    return [
        Case(
            "unacked_user_timeout",
            f"TCP_USER_TIMEOUT {p.user_timeout} ms",
            f"send() {len(PAYLOAD)} B, then recv()",
            _user_timeout,
            p.user_timeout / 1000,
            "1st timer retransmission + timeout",
        ),
        Case(
            "unacked_none",
            "none",
            f"send() {len(PAYLOAD)} B, then recv()",
            _none,
            retries2_s,
            basis,
        ),
    ]


def report_on(report: Report, out: dict[str, Outcome], ids: list[str]) -> None:
    table(
        report,
        "unacked",
        "Data left unacknowledged by a silently gone peer",
        [out[i] for i in ids],
    )
