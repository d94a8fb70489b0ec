"""connect() to an address that answers nothing: TCP_USER_TIMEOUT bounds it too.

The listener drops every SYN (the same `ret #0` filter: tcp_v4_rcv() runs it for a
listening socket too), so the client retransmits its SYN on the tcp_syn_retries
schedule, about 131 s with the defaults (kernel/retries.py syn_give_up()).
tcp_write_timeout() hands icsk_user_timeout to retransmits_timed_out() in SYN_SENT too,
so TCP_USER_TIMEOUT, documented for data, also ends a connect() with ETIMEDOUT; the case
measures whether it does on this kernel.
"""

from __future__ import annotations

import time

from sockprobe.kernel import deadpeer
from sockprobe.lab import Lab
from sockprobe.probes.dead_peer._case import Armed, Case, Outcome, table
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import Report


def _connect(lab: Lab, p: Params) -> Armed:
    hole = lab.listener(backlog=1, role="silent listener (drops every SYN)")
    deadpeer.drop_everything(hole)
    client = lab.open_socket()
    deadpeer.set_user_timeout(client, p.user_timeout)
    addr = hole.getsockname()
    return Armed(client, lambda: client.connect(addr), time.perf_counter(), [hole])


def cases(p: Params) -> list[Case]:
    return [
        Case(
            "connect_user_timeout",
            f"TCP_USER_TIMEOUT {p.user_timeout} ms",
            "connect()",
            _connect,
            p.user_timeout / 1000,
            "TCP_USER_TIMEOUT",
        )
    ]


def report_on(report: Report, out: dict[str, Outcome], p: Params) -> None:
    table(
        report,
        "connect",
        "connect() to a listener that drops every SYN",
        [out[c.id] for c in cases(p)],
    )
