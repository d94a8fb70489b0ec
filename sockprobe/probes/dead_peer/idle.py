"""An idle connection whose peer vanished: does a blocked recv() ever learn of it?

Nothing is in flight, so no retransmission timer runs: with no option the kernel has no
reason ever to send anything, and recv() waits forever (the probe wakes it at its bound).
SO_KEEPALIVE with short TCP_KEEPIDLE/INTVL/CNT makes the kernel send probes and abort
after idle + intvl x cnt (tcp_keepalive_timer(), net/ipv4/tcp_timer.c). TCP_USER_TIMEOUT
alone does nothing here: it bounds how long *transmitted* data (or keepalive probes) may
go unacknowledged, and an idle connection transmits nothing.
"""

from __future__ import annotations

import socket
import time

from sockprobe.kernel import deadpeer
from sockprobe.lab import Lab
from sockprobe.probes.dead_peer._case import Armed, Case, Outcome, deaf_pair, table
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import Report

NEVER = "no timer runs when idle"


def _recv(sock: socket.socket) -> Armed:
    return Armed(sock, lambda: sock.recv(1), time.perf_counter())


def _none(lab: Lab, p: Params) -> Armed:
    live, dead = deaf_pair(lab, "idle, no option")
    a = _recv(live)
    a.sockets.append(dead)
    return a


def _keepalive(lab: Lab, p: Params) -> Armed:
    live, dead = deaf_pair(lab, "idle, keepalive")
    t0 = time.perf_counter()
    deadpeer.set_keepalive(live, *p.keepalive)
    return Armed(live, lambda: live.recv(1), t0, [dead])


def _user_timeout(lab: Lab, p: Params) -> Armed:
    live, dead = deaf_pair(lab, "idle, user timeout")
    t0 = time.perf_counter()
    deadpeer.set_user_timeout(live, p.user_timeout)
    return Armed(live, lambda: live.recv(1), t0, [dead])


def cases(p: Params) -> list[Case]:
    idle, intvl, cnt = p.keepalive
    return [
        Case("idle_none", "none", "recv()", _none, None, NEVER),
        Case(
            "idle_keepalive",
            f"SO_KEEPALIVE {idle}/{intvl}/{cnt}",
            "recv()",
            _keepalive,
            p.keepalive_s,
            "idle + intvl x cnt",
        ),
        Case(
            "idle_user_timeout",
            f"TCP_USER_TIMEOUT {p.user_timeout} ms",
            "recv()",
            _user_timeout,
            None,
            "it needs unacknowledged data",
        ),
    ]


def report_on(report: Report, out: dict[str, Outcome], p: Params) -> None:
    ids = [c.id for c in cases(p)]
    table(
        report,
        "idle",
        "An idle connection, peer silently gone: a blocked recv()",
        [out[i] for i in ids],
    )
