"""Write-write-read: a request written in two pieces, then a wait for the reply, per
mode (nagle, nodelay, cork, cork-held) and per fix (fixes.py says how each writes and
serves).

With Nagle the second piece waits for the ACK of the first, and the server delays that
ACK because it has nothing to send until it has the whole request. Each mode and fix
gets a fresh connection; segments per request come from the client's TCP_INFO deltas.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.lab import Deadline, Lab
from sockprobe.probes.nagle import _wire as w
from sockprobe.probes.nagle import fixes
from sockprobe.probes.nagle.params import Params
from sockprobe.report import NA, VOLATILE, Cell, Histogram, Report, col


@dataclass
class Wwr:
    mode: str
    rtts_ms: list[float]
    #: Data segments the requests became over all rounds (retransmissions left out),
    #: and retransmissions.
    segments: int | None
    retrans: int | None
    #: The server's tcpi_ato and tcpi_rtt (smoothed RTT) at the end.
    server_ato_ms: float | None
    server_srtt_ms: float | None
    #: The client's tcpi_rto, read after every round (its median): what a corked tail
    #: waits for (see cork_flush_ms).
    client_rto_ms: float | None
    #: The locked rto_min of the server's route back to the client, which caps the
    #: server's delayed-ACK timer (see _wire.delack_max_ms); None when the route has none.
    route_rto_min_ms: float | None = None
    #: The client's tcpi_snd_mss at the end (None without TCP_INFO).
    snd_mss: int | None = None

    @property
    def stall_ms(self) -> float:
        return w.stall_ms(self.route_rto_min_ms)

    @property
    def per_request(self) -> float | None:
        return None if self.segments is None else self.segments / len(self.rtts_ms)

    @property
    def median(self) -> float:
        return statistics.median(self.rtts_ms)

    @property
    def p90(self) -> float:
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]

    @property
    def stalled(self) -> int:
        return sum(1 for r in self.rtts_ms if r >= self.stall_ms)

    @property
    def fast_first(self) -> int:
        """Rounds before the first stalled one (all of them when none stalled)."""
        stall = self.stall_ms
        return next((i for i, r in enumerate(self.rtts_ms) if r >= stall), len(self.rtts_ms))


def _serve(
    s: socket.socket, mode: str, rounds: int, size: int, deadline: Deadline
) -> tuple[float | None, float | None]:
    """Server side: read the whole two-piece request, then reply with one write. Returns
    the server's delayed-ACK timeout (tcpi_ato) and smoothed RTT at the end, in ms."""
    reply = b"r" * size
    fixes.serve_setup(mode, s)
    for _ in range(rounds):
        got = 0
        while got < 2 * size:
            s.settimeout(deadline.timeout(5.0, "serving write-write-read"))
            chunk = s.recv(w.RECV_SIZE)
            if not chunk:
                raise ConnectionError(f"client closed after {got} B of a request")
            got += len(chunk)
            fixes.after_server_recv(mode, s)
        s.sendall(reply)
    info = kernel.tcp_info(s)
    if info is None:
        return None, None
    return info.ato_us / 1000, info.rtt_us / 1000


def measure(lab: Lab, mode: str, p: Params) -> Wwr:
    c, s = w.pair(lab, mode, f"write-write-read {mode}")
    # The server's ACKs travel its route to the client's address.
    rto_min = w.route_rto_min_ms(c.getsockname()[0])
    server = lab.thread(_serve, s, mode, p.rounds, p.size, lab.deadline, name="sockprobe-nagle-srv")
    piece = b"q" * p.size
    rtts: list[float] = []
    rtos: list[float] = []
    mss: int | None = None
    before = w.sent(c)
    if mode == "cork-held":
        w.cork(c, True)  # and never released: every request waits for the kernel's timer
    for _ in range(p.rounds):
        c.settimeout(lab.deadline.timeout(5.0, f"write-write-read ({mode})"))
        t0 = time.perf_counter()
        if mode == "cork":
            w.cork(c, True)
        fixes.write_request(mode, c, piece)
        if mode == "cork":
            w.cork(c, False)
        got = 0
        while got < p.size:
            chunk = c.recv(w.RECV_SIZE)
            if not chunk:
                raise ConnectionError("server closed during write-write-read")
            got += len(chunk)
        rtts.append((time.perf_counter() - t0) * 1000)
        info = kernel.tcp_info(c)
        if info is not None:
            rtos.append(info.rto_us / 1000)
            mss = info.snd_mss
    after = w.sent(c)
    ato_ms, srtt_ms = w.result(server, lab.deadline, "serving write-write-read")
    lab.close_abortively(c, s)
    segs, retrans = w.delta(before, after)
    rto = statistics.median(rtos) if rtos else None
    return Wwr(mode, rtts, segs, retrans, ato_ms, srtt_ms, rto, rto_min, mss)


# -- the kernel's rules these rows are read against ------------------------------------
#: TCP_RTO_MIN (include/net/tcp.h): 200 ms, the floor of tcp_probe0_base().
TCP_RTO_MIN_MS = 200.0
TCP_ATO_MIN_MS = w.TCP_ATO_MIN_MS
TCP_DELACK_MAX_MS = w.TCP_DELACK_MAX_MS


def cork_flush_ms(rto_ms: float) -> float:
    """When a corked sub-MSS tail leaves by itself. TCP_CORK has no timer of its own:
    with nothing in flight, __tcp_push_pending_frames() (tcp_output.c) cannot send the
    tail and calls tcp_check_probe_timer(), which arms the zero-window-probe timer for
    tcp_probe0_base() = max(icsk_rto, TCP_RTO_MIN); when it fires, tcp_write_wakeup()
    sends the queued bytes. So: max(RTO, 200 ms) after the last ACK."""
    return max(rto_ms, TCP_RTO_MIN_MS)


def delack_timeout_ms(ato_ms: float, srtt_ms: float, rto_min_ms: float | None = None) -> float:
    """The delayed-ACK timer an interactive receiver arms (tcp_output.c
    tcp_send_delayed_ack): its ato, at most tcp_delack_max() (TCP_DELACK_MAX, 200 ms, or
    the route's rto_min when lower) and at most max(srtt, TCP_DELACK_MIN)."""
    return min(ato_ms, w.delack_max_ms(rto_min_ms), max(srtt_ms, TCP_ATO_MIN_MS))


def delack_text(ato_ms: float, srtt_ms: float, rto_min_ms: float | None = None) -> str:
    """What the measured server timers say about delayed ACKs here and off loopback.

    ato grows only when a segment arrives less than ato after the previous one
    (tcp_input.c tcp_event_data_recv: ato/2 + the gap); a request's second piece
    arrives a delayed ACK plus a round trip after its first, so in write-write-read ato
    stays at TCP_ATO_MIN and the RTT bound, max(RTT, 40 ms), can only lower the timer,
    never raise it: a longer path adds its round trips, not a longer delayed ACK."""
    timeout = delack_timeout_ms(ato_ms, srtt_ms, rto_min_ms)
    cap = w.delack_max_ms(rto_min_ms)
    if rto_min_ms is not None and cap < TCP_ATO_MIN_MS and timeout <= cap:
        # The kernel also lowers the stored ato to the cap (tcpi_ato reads it, rounded to
        # jiffies), so the reading can sit a little under the route's value.
        where = (
            f"below TCP_ATO_MIN ({TCP_ATO_MIN_MS:g} ms): the route's rto_min "
            f"({rto_min_ms:g} ms) caps it (tcp_delack_max)"
        )
    elif timeout <= TCP_ATO_MIN_MS:
        where = f"at its floor, TCP_ATO_MIN ({TCP_ATO_MIN_MS:g} ms)"
    else:
        where = f"above its {TCP_ATO_MIN_MS:g} ms floor"
    route = "" if rto_min_ms is None else f" and a route rto_min of {rto_min_ms:g} ms"
    return (
        f"the server's delayed-ACK timeout (tcpi_ato) read {ato_ms:g} ms with a smoothed RTT "
        f"of {srtt_ms:g} ms{route}, so by those readings its timer is {timeout:g} ms, {where}; "
        "the kernel "
        f"arms min(ato, max(RTT, {TCP_ATO_MIN_MS:g} ms), {TCP_DELACK_MAX_MS:g} ms or the "
        "route's rto_min) (tcp_send_delayed_ack), and ato grows only while segments "
        "arrive less than ato apart (tcp_event_data_recv), which a request's two pieces "
        "never do: on a longer path each round adds round trips, not a longer timer"
    )


# -- table, chart, findings ------------------------------------------------------------
def table(report: Report, p: Params, rows: list[Wwr]) -> None:
    # Every connection runs on the same host address, so one threshold fits all rows.
    stall = rows[0].stall_ms if rows else w.stall_ms(None)
    t = report.table(
        "wwr",
        f"Write-write-read: {p.rounds} rounds of two {p.size} B writes, then a {p.size} B "
        "reply (modes, then fixes)",
        [
            col("mode"),
            col("median_ms", "median", "ms", VOLATILE),
            col("p90_ms", "p90", "ms", VOLATILE),
            col("max_ms", "max", "ms", VOLATILE),
            col("stalled", f"stalled >= {stall:g} ms", "rounds", VOLATILE),
            col("fast_first_rounds", "fast rounds before the first stall", "rounds", VOLATILE),
            col("data_segments_per_request", "data segments/request", "", VOLATILE),
            col("retransmitted", "retransmitted", "segments", VOLATILE),
            col("server_ato_ms", "server ACK timeout (tcpi_ato)", "ms", VOLATILE),
            col("client_rto_ms", "client RTO (tcpi_rto)", "ms", VOLATILE),
        ],
        keys=["mode"],
    )
    for r in rows:
        per = r.per_request
        t.add(
            r.mode,
            round(r.median, 4),
            round(r.p90, 4),
            round(max(r.rtts_ms), 4),
            r.stalled,
            r.fast_first,
            NA(w.NO_TCP_INFO) if per is None else round(per, 2),
            NA(w.NO_TCP_INFO) if r.retrans is None else r.retrans,
            _na(r.server_ato_ms),
            _na(r.client_rto_ms),
        )
    rounds = report.table(
        "wwr_rounds",
        "Write-write-read: every round trip (the histogram's samples)",
        [col("mode"), col("round"), col("rtt_ms", "round trip", "ms", VOLATILE)],
        keys=["mode", "round"],
        detail=True,
    )
    hist = Histogram("wwr_rtt", "Write-write-read round trips per mode", "ms")
    for r in rows:
        for i, rtt in enumerate(r.rtts_ms, 1):
            rounds.add(r.mode, i, round(rtt, 4))
        hist.add(r.mode, [round(x, 4) for x in r.rtts_ms])
    report.charts.append(hist)


def _na(v: float | None) -> Cell:
    return NA(w.NO_TCP_INFO) if v is None else v


def nagle_vs_nodelay(n: Wwr, d: Wwr, rounds: int) -> str:
    """Nagle against TCP_NODELAY. The delayed-ACK explanation is given only for rounds
    that did stall, next to the server's timers it rests on."""
    text = (
        f"Write-write-read: median round trip {w.ms(n.median)} ms with Nagle vs "
        f"{w.ms(d.median)} ms with TCP_NODELAY"
    )
    if n.median > d.median > 0:
        ratio = n.median / d.median
        text += f" ({ratio:,.0f}x slower)" if ratio >= 10 else f" ({ratio:.1f}x slower)"
    if not n.stalled:
        if len(n.rtts_ms) == 1:
            return text + (
                f"; the one Nagle round took under {n.stall_ms:g} ms: a connection's first "
                "request is acknowledged at once (its quick-ACK start, see quickack_start); "
                "more --rounds show the stall."
            )
        return text + (
            f"; no Nagle round took >= {n.stall_ms:g} ms in {len(n.rtts_ms)}: the server "
            "acknowledged every first piece at once, so delayed ACKs are off on this path "
            "(a route with quickack 1, RTAX_QUICKACK, does that: tcp_input.c "
            "tcp_in_quickack_mode), and Nagle had nothing to wait for."
        )
    text += f"; {n.stalled} of {len(n.rtts_ms)} Nagle rounds took >= {n.stall_ms:g} ms"
    per = n.per_request
    if per is not None:
        text += f", each request went out as {per:.2f} data segments"
    if n.server_ato_ms is not None and n.server_srtt_ms is not None:
        text += "; " + delack_text(n.server_ato_ms, n.server_srtt_ms, n.route_rto_min_ms)
    return text + (
        ". Nagle holds the second piece until the first is acknowledged, and the server "
        "delays that ACK because it has nothing to send until it has the whole request."
    )


def cork_findings(by_mode: dict[str, Wwr]) -> list[str]:
    out: list[str] = []
    c = by_mode.get("cork")
    if c is not None:
        per = c.per_request
        segs = "" if per is None else f", {per:.2f} data segments per request"
        out.append(f"Cork, write both pieces, uncork: median {w.ms(c.median)} ms{segs}.")
    h = by_mode.get("cork-held")
    if h is not None:
        if h.client_rto_ms is None:
            out.append(
                f"A cork never released: median {w.ms(h.median)} ms per request (the RTO "
                "cannot be read here to compare it with)."
            )
        else:
            expect = cork_flush_ms(h.client_rto_ms)
            out.append(
                f"A cork never released: median {w.ms(h.median)} ms per request, against "
                f"max(RTO {h.client_rto_ms:g} ms, {TCP_RTO_MIN_MS:g} ms) = {expect:g} ms: "
                "TCP_CORK has no timer of its own; with nothing in flight the corked tail "
                "leaves when the zero-window-probe timer fires (tcp_output.c "
                "__tcp_push_pending_frames -> tcp_check_probe_timer, tcp_probe0_base)."
            )
    return out
