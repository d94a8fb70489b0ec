"""What each packet that meets a full accept queue becomes: a SYN, a half-open request's
final ACK, and a SYN cookie's final ACK (kernel/overflow.py states the kernel's rule).

The statement is computed from net.ipv4.tcp_abort_on_overflow and tcp_syncookies, and
each path is then made to happen, on its own listener, so that the table puts the
stated fate beside the measured one:

- syn: listen(0) holding one unaccepted connection (full), then a connect: its SYN
  meets the full queue;
- request_ack: listen(2); client A's final ACK is held back by a socket filter on the
  listener (kernel/synfilter.py), so the listener keeps A's half-open request; three more
  clients fill the queue; the filter goes, and A sends one byte, which carries its final
  ACK into the full queue;
- cookie_ack: listen(0); client D's SYN is answered with a cookie (tcp_syncookies 2, or 1
  with a held half-open request already over the backlog of 0), its final ACK is held
  back, one more client fills the queue, the filter goes and D sends one byte.

A held-back client is ESTABLISHED on its own side (it got the SYN-ACK), which is what
happens to real clients whose final ACK is lost or arrives at a bad moment. The fate is
read from the client (SO_ERROR: ECONNRESET for a reset) and the listener (sock_diag
SK_MEMINFO_DROPS rises by one for a dropped packet; the accept queue grows if it got in).
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import overflow as rule
from sockprobe.kernel.backlog import listener_view, so_error
from sockprobe.lab import Lab
from sockprobe.probes.backlog.clients import (
    TCP_ESTABLISHED,
    errno_text,
    half_open,
    held_back,
    open_client,
    tcp_state,
    until,
)
from sockprobe.report import CONTEXT, NA, Cell, Report, col
from sockprobe.status import oserror_text

#: After the listener counted the drop, how long to look for an RST at the client.
RST_GRACE_S = 0.02

SETUPS = {
    rule.SYN: "listen(0) with 1 connection queued, then a connect",
    rule.REQUEST_ACK: "listen(2): a half-open request, 3 connections queued, then its ACK",
    rule.COOKIE_ACK: "listen(0): a SYN answered with a cookie, 1 connection queued, then its ACK",
}
LABELS = {
    rule.SYN: "a SYN",
    rule.REQUEST_ACK: "a half-open request's final ACK",
    rule.COOKIE_ACK: "a SYN cookie's final ACK",
}


@dataclass
class PathResult:
    path: str
    #: How the listener answered the client's SYN: request, cookie, dropped; or NA.
    answered: Cell
    stated: Cell
    fate: Cell
    client_state: Cell
    client_error: Cell
    cookies_sent: int | None
    cookies_recv: int | None


def _queue(lst: socket.socket) -> int:
    return listener_view(lst, proc=False).queue or 0


def _fill(lab: Lab, lst: socket.socket, n: int, queued: int) -> bool:
    addr = lst.getsockname()
    for _ in range(n):
        f = open_client(lab)
        f.connect_ex(addr)
    return until(lab, lambda: _queue(lst) >= queued + n, "filling the accept queue")


def _cookie_counters() -> tuple[int | None, int | None]:
    ext = kernel.netstat_counters().get("TcpExt", {})
    return ext.get("SyncookiesSent"), ext.get("SyncookiesRecv")


def _deliver(lab: Lab, lst: socket.socket, c: socket.socket) -> tuple[str, int]:
    """Let client `c` (ESTABLISHED on its side) send one byte, which carries its final
    ACK again; return (fate, SO_ERROR)."""
    view = listener_view(lst, proc=False)
    d0, q0 = view.drops or 0, view.queue or 0
    err = 0
    try:
        c.send(b"x")
    except OSError as exc:
        err = exc.errno or 0

    def seen() -> bool:
        nonlocal err
        err = err or so_error(c)
        v = listener_view(lst, proc=False)
        return bool(err) or (v.drops or 0) > d0 or (v.queue or 0) > q0

    until(lab, seen, "delivering the final ACK")
    if not err:
        # The RST of tcp_abort_on_overflow follows the drop count in the same softirq;
        # give the client a moment to process it before calling it a silent drop.
        time.sleep(RST_GRACE_S)
        err = so_error(c)
    v = listener_view(lst, proc=False)
    if err in (errno.ECONNRESET, errno.ECONNREFUSED):
        return rule.RESET, err
    if (v.queue or 0) > q0:
        return "admitted", err
    if (v.drops or 0) > d0:
        return rule.DROPPED, err
    return "no sign of arrival", err


def _syn(lab: Lab, abort: int) -> PathResult:
    lst = lab.listener(backlog=0, role="overflow: syn listener")
    if not _fill(lab, lst, 1, 0):
        return _na(rule.SYN, abort, "the accept queue did not fill")
    d0 = listener_view(lst, proc=False).drops or 0
    s0 = _cookie_counters()
    c = open_client(lab)
    c.connect_ex(lst.getsockname())
    until(lab, lambda: (listener_view(lst, proc=False).drops or 0) > d0, "a SYN drop")
    err = so_error(c)
    state = tcp_state(c)
    dropped = (listener_view(lst, proc=False).drops or 0) > d0
    fate = (
        rule.RESET
        if err in (errno.ECONNREFUSED, errno.ECONNRESET)
        else rule.DROPPED
        if dropped and state == 2
        else "no sign of arrival"
    )
    return PathResult(
        rule.SYN,
        "dropped" if fate == rule.DROPPED else NA("the SYN was not dropped"),
        rule.at_full_queue(rule.SYN, abort),
        fate,
        kernel.tcp_state_name(state) if state is not None else NA("no TCP_INFO"),
        errno_text(err) if err else "-",
        *_cookie_delta(s0),
    )


def _cookie_delta(s0: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    s1 = _cookie_counters()
    return (
        None if s0[0] is None or s1[0] is None else s1[0] - s0[0],
        None if s0[1] is None or s1[1] is None else s1[1] - s0[1],
    )


def _na(path: str, abort: int, reason: str) -> PathResult:
    return PathResult(
        path,
        NA(reason),
        rule.at_full_queue(path, abort),
        NA(reason),
        NA(reason),
        NA(reason),
        None,
        None,
    )


def _held(
    lab: Lab, path: str, backlog: int, abort: int, syncookies: int, fillers: int
) -> PathResult:
    """The two ACK paths: hold the client's final ACK, fill the queue, deliver it. A
    kernel that refuses the holding socket filter for this user (EPERM seen as an
    unprivileged user here) leaves the row n/a with that cause; the rest runs."""
    try:
        return _held_run(lab, path, backlog, abort, syncookies, fillers)
    except PermissionError as exc:
        return _na(
            path,
            abort,
            f"the kernel refused the socket filter that holds the final ACK back "
            f"({oserror_text(exc)})",
        )


def _held_run(
    lab: Lab, path: str, backlog: int, abort: int, syncookies: int, fillers: int
) -> PathResult:
    lst = lab.listener(backlog=backlog, role=f"overflow: {path} listener")
    addr = lst.getsockname()
    client = open_client(lab, bind=True)
    # tcp_syncookies 1 sends cookies only once half-open requests exceed the backlog:
    # one held request over listen(0)'s backlog of 0 does it.
    hold = path == rule.COOKIE_ACK and syncookies == 1
    s0 = _cookie_counters()
    with held_back(lab, lst, [client.getsockname()[1]], hold) as ok:
        if not ok:
            return _na(path, abort, "no half-open request could be held")
        h0 = half_open(lst)
        client.connect_ex(addr)
        if not until(lab, lambda: tcp_state(client) == TCP_ESTABLISHED, "the handshake"):
            return _na(path, abort, "the client's SYN was not answered")
        # A kept request shows up as one more SYN_RECV entry; a cookie keeps nothing.
        until(lab, lambda: half_open(lst) > h0, "the request", cap=0.01)
        answered = "request" if half_open(lst) > h0 else "cookie"
        if not _fill(lab, lst, fillers, 0):
            return _na(path, abort, "the accept queue did not fill")
    fate, err = _deliver(lab, lst, client)
    state = tcp_state(client)
    return PathResult(
        path,
        answered,
        rule.at_full_queue(path, abort),
        fate,
        kernel.tcp_state_name(state) if state is not None else NA("no TCP_INFO"),
        errno_text(err) if err else "-",
        *_cookie_delta(s0),
    )


def measure(lab: Lab, abort: int, syncookies: int) -> list[PathResult]:
    out = [_syn(lab, abort)]
    if syncookies == 2:
        out.append(
            _na(
                rule.REQUEST_ACK,
                abort,
                "tcp_syncookies is 2: every SYN gets a cookie, no half-open request is kept",
            )
        )
    else:
        out.append(_held(lab, rule.REQUEST_ACK, 2, abort, syncookies, 3))
    if syncookies == 0:
        out.append(
            _na(rule.COOKIE_ACK, abort, "tcp_syncookies is 0: no SYN is answered with a cookie")
        )
    else:
        out.append(_held(lab, rule.COOKIE_ACK, 0, abort, syncookies, 1))
    return out


def table(report: Report, results: list[PathResult]) -> None:
    t = report.table(
        "overflow",
        "At a full accept queue: the kernel's rule for these settings, and what happened",
        [
            col("path"),
            col("setup"),
            col("answered", "SYN answered with"),
            col("stated", "stated fate"),
            col("fate", "measured fate"),
            col("client_state", "client state"),
            col("client_error", "client SO_ERROR"),
            col("syncookies_sent", "SyncookiesSent Δ (this netns)", kind=CONTEXT),
            col("syncookies_recv", "SyncookiesRecv Δ (this netns)", kind=CONTEXT),
        ],
        keys=["path"],
    )
    no_counter = NA("/proc/net/netstat TcpExt is not readable here")
    for r in results:
        # A path these settings rule out has no counters either, for the same reason.
        missing = r.fate if isinstance(r.fate, NA) else no_counter
        t.add(
            r.path,
            SETUPS[r.path],
            r.answered,
            r.stated,
            r.fate,
            r.client_state,
            r.client_error,
            missing if r.cookies_sent is None else r.cookies_sent,
            missing if r.cookies_recv is None else r.cookies_recv,
        )


def findings(
    report: Report, results: list[PathResult], abort: int | None, syncookies: int | None
) -> None:
    report.findings.extend(rule.overflow_sentences(abort, syncookies))
    parts = []
    for r in results:
        if isinstance(r.fate, NA):
            parts.append(f"{LABELS[r.path]}: not measured ({r.fate.reason})")
            continue
        how = f"{r.fate}" + (
            f" (the client, {r.client_state}, got {r.client_error})"
            if r.client_error not in ("-", None)
            else f" (the client stayed {r.client_state})"
        )
        verdict = "as stated" if r.fate == r.stated else f"NOT as stated ({r.stated})"
        parts.append(f"{LABELS[r.path]}: {how}, {verdict}")
    report.findings.append("Measured at a full accept queue: " + "; ".join(parts) + ".")
