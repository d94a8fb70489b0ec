"""SYN cookies in action: what a connection that began with a cookie keeps of its SYN.

Two connections on loopback, each accepted, each read from TCP_INFO on both ends
(kernel/tcpopts.py, handshake()): one through listen(8), whose SYN got a normal half-open request,
and one whose SYN got a cookie. The cookie is made to happen without changing any
setting: with tcp_syncookies 1, listen(0) answers with cookies once it holds more
half-open requests than its backlog of 0, so one client's final ACK is held back by a
socket filter (kernel/synfilter.py) to keep a request open while the measured client
connects; tcp_syncookies 2 answers every SYN with a cookie; 0 never does (n/a).

The kernel's rule (kernel/syncookie.py) states what the cookie connection's server sends
with (a table MSS, less the timestamp option) and whether window scaling and SACK survive
(only inside a timestamp); the table puts it beside the measured values. The
SyncookiesSent/Recv/Failed deltas are this network namespace's, so they are context.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import syncookie
from sockprobe.kernel.tcpopts import Handshake, handshake
from sockprobe.lab import Lab
from sockprobe.probes.backlog.clients import half_open, held_back, open_client, until
from sockprobe.report import CONTEXT, NA, Cell, Report, col

COUNTERS = ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed")


@dataclass
class Connection:
    kind: str
    client: Handshake | None
    server: Handshake | None
    #: Half-open requests the listener gained at the client's SYN (0 for a cookie).
    requests: int | None
    counters: dict[str, int | None]
    na: str = ""


def _counters() -> dict[str, int | None]:
    ext = kernel.netstat_counters().get("TcpExt", {})
    return {k: ext.get(k) for k in COUNTERS}


def _connect(lab: Lab, lst: socket.socket) -> tuple[socket.socket, socket.socket] | None:
    c = open_client(lab)
    c.connect_ex(lst.getsockname())
    lst.setblocking(False)
    got: list[socket.socket] = []

    def accepted() -> bool:
        try:
            s, _ = lst.accept()
        except BlockingIOError:
            return False
        got.append(lab.adopt(s))
        return True

    if not until(lab, accepted, "accepting the measured connection"):
        return None
    return c, got[0]


def _one(lab: Lab, kind: str, syncookies: int) -> Connection:
    before = _counters()
    if kind == "request":
        lst = lab.listener(backlog=8, role="cookies: normal listener")
        h0 = half_open(lst)
        pair = _connect(lab, lst)
        requests = None
    else:
        lst = lab.listener(backlog=0, role="cookies: cookie listener")
        with held_back(lab, lst, [], hold_request=syncookies == 1) as ok:
            if not ok:
                return Connection(kind, None, None, None, {}, "no half-open request was held")
            h0 = half_open(lst)
            pair = _connect(lab, lst)
            requests = half_open(lst) - h0
    if pair is None:
        return Connection(kind, None, None, None, {}, "the connection was not accepted")
    after = _counters()
    counters: dict[str, int | None] = {}
    for k in COUNTERS:
        a, b = before[k], after[k]
        counters[k] = None if a is None or b is None else b - a
    c, s = pair
    return Connection(kind, handshake(c), handshake(s), requests, counters)


def measure(lab: Lab, syncookies: int) -> list[Connection]:
    if syncookies == 2:
        none = "tcp_syncookies is 2: every SYN gets a cookie, there is no normal connection"
        return [Connection("request", None, None, None, {}, none), _one(lab, "cookie", 2)]
    normal = _one(lab, "request", syncookies)
    if syncookies == 0:
        return [
            normal,
            Connection("cookie", None, None, None, {}, "tcp_syncookies is 0: no cookies"),
        ]
    return [normal, _one(lab, "cookie", syncookies)]


def _stated(conn: Connection, timestamps: int | None, v6: bool) -> tuple[Cell, Cell]:
    """(stated server snd_mss, stated 'options kept') for the cookie connection."""
    if conn.kind != "cookie" or conn.client is None:
        return NA("the rule is about cookie connections"), NA("the rule is about cookies")
    ts = bool(timestamps) and conn.client.timestamps
    return (
        syncookie.server_snd_mss(conn.client.advmss, v6, ts),
        syncookie.keeps_options(ts),
    )


def table(report: Report, conns: list[Connection], timestamps: int | None, v6: bool) -> None:
    t = report.table(
        "cookies",
        "A connection through a normal half-open request and one through a SYN cookie, "
        "read from TCP_INFO on both ends",
        [
            col("connection"),
            col("end"),
            col("timestamps"),
            col("sack"),
            col("wscale", "window scaling"),
            col("rcv_wscale", "own window scale"),
            col("snd_mss", "sends with MSS", "B"),
            col("advmss", "advertised MSS", "B"),
            col("stated_snd_mss", "stated MSS (rule)", "B"),
            col("stated_options", "wscale/SACK kept (rule)"),
            col("cookies_sent", "SyncookiesSent Δ (this netns)", kind=CONTEXT),
            col("cookies_recv", "SyncookiesRecv Δ (this netns)", kind=CONTEXT),
            col("cookies_failed", "SyncookiesFailed Δ (this netns)", kind=CONTEXT),
        ],
        keys=["connection", "end"],
    )
    for conn in conns:
        mss, opts = _stated(conn, timestamps, v6)
        for end, n in (("client", conn.client), ("server", conn.server)):
            if n is None:
                why = NA(conn.na or "TCP_INFO not available")
                t.add(conn.kind, end, why, why, why, why, why, why, why, why, why, why, why)
                continue
            server = end == "server"
            ctr: list[Cell] = [
                (conn.counters.get(k) if conn.counters.get(k) is not None else NA("not readable"))
                if server
                else NA("counted for the listener: see the server row")
                for k in COUNTERS
            ]
            t.add(
                conn.kind,
                end,
                n.timestamps,
                n.sack,
                n.window_scaling,
                n.rcv_wscale,
                n.snd_mss,
                n.advmss,
                mss if server else NA("the rule states the server's MSS"),
                opts,
                *ctr,
            )


def findings(report: Report, conns: list[Connection], timestamps: int | None, v6: bool) -> None:
    normal = next(c for c in conns if c.kind == "request")
    cookie = next(c for c in conns if c.kind == "cookie")
    report.findings.append(syncookie.cookie_sentence(timestamps, v6))
    if cookie.server is None or cookie.client is None:
        report.findings.append(f"The cookie connection was not measured: {cookie.na}.")
        return
    beside = (
        f"the normal connection's: {normal.server.snd_mss} B"
        if normal.server is not None
        else "no normal connection to compare"
    )
    mss, opts = _stated(cookie, timestamps, v6)
    lost = [
        name
        for name, kept in (
            ("window scaling", cookie.server.window_scaling),
            ("SACK", cookie.server.sack),
        )
        if not kept
    ]
    agree = cookie.server.snd_mss == mss and (not lost) == opts
    same = (cookie.client.window_scaling, cookie.client.sack) == (
        cookie.server.window_scaling,
        cookie.server.sack,
    )
    report.findings.append(
        f"Measured: the cookie connection's server sends with MSS {cookie.server.snd_mss} B "
        f"({beside}; the client advertised "
        f"{cookie.client.advmss} B), and "
        + (f"lost {' and '.join(lost)}" if lost else "kept window scaling and SACK")
        + (" on both ends" if same else " (the client's TCP_INFO differs)")
        + (", as the rule states." if agree else f", NOT as the rule states (MSS {mss}).")
    )
