"""sockprobe nagle: what small writes become on the wire, what write-write-read costs,
and what fixes it.

Experiments, each on fresh loopback connections, one module each:

- coalescing.py: N back-to-back small writes per mode (Nagle, TCP_NODELAY, TCP_CORK),
  data segments counted from TCP_INFO, receiver idle or reading concurrently;
- attribution.py: why each write was or was not sent at once (TCP_INFO after each);
- wwr.py: write-write-read round trips per mode and per fix (fixes.py: one send,
  sendmsg, MSG_MORE, TCP_QUICKACK once vs re-armed), with a histogram;
- quickack_start.py: the receiver's quick-ACK budget at connection start.

The timer-bound experiments (Nagle, cork-held and quickack-once round trips, the
quick-ACK start) wait on the kernel's 40 ms and 200 ms timers, so they run side by
side in threads, each on its own connections, while the fast ones run in this thread.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes import Stopwatch, plural
from sockprobe.probes.nagle import _wire as w
from sockprobe.probes.nagle import attribution, coalescing, fixes, quickack_start, wwr
from sockprobe.probes.nagle.params import ALL_MODES, FIXES, MODES, READERS, TCP_CORK, Params
from sockprobe.report import Report, environment, params_dict
from sockprobe.status import DeadlineExceeded, Unsupported

__all__ = ["ALL_MODES", "FIXES", "MODES", "READERS", "TCP_CORK", "Params", "run"]

SYSCTLS = ("net.ipv4.tcp_autocorking", "net.ipv4.tcp_congestion_control")
#: Round trips expected to wait on a kernel timer: run concurrently (see docstring).
TIMER_BOUND = ("nagle", "cork-held", "quickack-once")


def _join(w_: Worker, deadline: Deadline, doing: str) -> object:
    if not w_.join(deadline.timeout(None, doing)):
        deadline.check(doing)
        raise DeadlineExceeded(f"--deadline {deadline.seconds:g} s ran out while {doing}")
    if w_.error is not None:
        raise w_.error
    return w_.result


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "nagle", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    modes = [m for m in ALL_MODES if m in params.modes]
    if TCP_CORK is None:
        skipped = [m for m in modes if w.corks(m)]
        modes = [m for m in modes if not w.corks(m)]
        if skipped and not modes:
            raise Unsupported(
                f"--mode {', '.join(skipped)}: TCP_CORK does not exist on this platform"
            )
        if skipped:
            report.notes.append(
                f"{', '.join(skipped)}: TCP_CORK does not exist on this platform (macOS has "
                "TCP_NOPUSH, Windows neither)."
            )
    fix_list = [f for f in params.fix_list if fixes.available(f)]
    for f in params.fix_list:
        if not fixes.available(f):
            report.notes.append(f"Fix {f} skipped: {fixes.MISSING[f]}.")
    readers = ["idle", "concurrent"] if params.reader == "both" else [params.reader]
    # cork-held only makes sense as round trips; the coalescing modes exclude it.
    burst_modes = [m for m in modes if m != "cork-held"]
    rtt_modes = [*modes, *fix_list]
    with Lab(host, deadline) as lab:
        slow = {
            m: lab.thread(wwr.measure, lab, m, params, name=f"sockprobe-nagle-{m}")
            for m in rtt_modes
            if m in TIMER_BOUND
        }
        quick = (
            lab.thread(quickack_start.measure, lab, params.quickack_probes, name="sockprobe-qa")
            if params.quickack_probes
            else None
        )
        coalesced = [coalescing.measure(lab, m, r, params) for r in readers for m in burst_modes]
        attributions = [
            a for m in burst_modes if (a := attribution.measure(lab, m, params)) is not None
        ]
        fast = {m: wwr.measure(lab, m, params) for m in rtt_modes if m not in TIMER_BOUND}
        done = {m: _join(t, deadline, f"write-write-read ({m})") for m, t in slow.items()}
        qs_done = None if quick is None else _join(quick, deadline, "the quick-ACK start")
        report.endpoints = lab.endpoints
    results: dict[str, object] = {**fast, **done}
    rows = [r for m in rtt_modes if isinstance(r := results[m], wwr.Wwr)]
    qs = qs_done if isinstance(qs_done, quickack_start.QuickStart) else None
    _compose(report, params, readers, coalesced, attributions, rows, qs)
    report.duration_s = watch()
    return report


def _compose(
    report: Report,
    p: Params,
    readers: list[str],
    coalesced: list[coalescing.Coalesce],
    attributions: list[attribution.Attribution],
    rows: list[wwr.Wwr],
    qs: quickack_start.QuickStart | None,
) -> None:
    if not any(r.rtts_ms for r in rows):
        raise Unsupported("no write-write-read round was made")
    for reader in readers:
        sub = [c for c in coalesced if c.reader == reader]
        if sub:
            coalescing.table(report, p, sub, reader)
            text = coalescing.finding(p, sub, reader)
            if text:
                report.findings.append(text)
    if attributions:
        attribution.table(report, attributions)
    elif coalesced:
        report.notes.append(f"Attribution skipped: {w.NO_TCP_INFO}.")
    budget = None if qs is None else qs.immediate
    report.findings.extend(attribution.findings(p, attributions, budget))
    if qs is not None:
        quickack_start.table(report, qs)
    wwr.table(report, p, rows)
    by_mode = {r.mode: r for r in rows}
    if "nagle" in by_mode and "nodelay" in by_mode:
        report.findings.append(wwr.nagle_vs_nodelay(by_mode["nagle"], by_mode["nodelay"], p.rounds))
    report.findings.extend(wwr.cork_findings(by_mode))
    report.findings.extend(fixes.findings(by_mode))
    if qs is not None:
        text = quickack_start.finding(qs)
        n = by_mode.get("nagle")
        if n is not None and n.stalled and n.fast_first < qs.immediate:
            text += (
                " In write-write-read only "
                + (
                    "the first Nagle round was"
                    if n.fast_first == 1
                    else f"{n.fast_first} Nagle rounds were"
                )
                + " fast: the "
                "server's reply made the connection interactive (pingpong: tcp_output.c "
                "tcp_event_data_sent), and an interactive receiver delays ACKs with quick-ACK "
                "budget left (tcp_input.c tcp_in_quickack_mode)."
            )
        report.findings.append(text)
    report.summary = _headline(p, by_mode, coalesced)
    _notes(report, p, next((r.snd_mss for r in rows if r.snd_mss), None))


def _headline(p: Params, by_mode: dict[str, wwr.Wwr], coalesced: list[coalescing.Coalesce]) -> str:
    """The answer in one line: segments per mode, then write-write-read per mode and the
    fastest fix (every figure is in the findings and tables)."""
    parts = []
    idle = [c for c in coalesced if c.reader == "idle" and c.segments is not None]
    if idle:
        parts.append(
            f"{p.writes} writes of {p.size} B: "
            + ", ".join(
                (plural(c.segments or 0, "segment") if i == 0 else str(c.segments))
                + f" {w.LABELS[c.mode]}"
                for i, c in enumerate(idle)
            )
        )
    short = {"nagle": "Nagle", "nodelay": "TCP_NODELAY", "cork": "cork", "cork-held": "cork held"}
    modes = [f"{short[m]} {w.ms(r.median)} ms" for m, r in by_mode.items() if m in short]
    fixes_run = [r for m, r in by_mode.items() if m not in short]
    if fixes_run:
        best = min(fixes_run, key=lambda r: r.median)
        modes.append(f"{best.mode} {w.ms(best.median)} ms")
    if modes:
        parts.append("write-write-read median " + ", ".join(modes))
    return "; ".join(parts)


def _gso_clause(size: int, mss: int | None) -> str:
    """Whether a counted segment is one captured packet: only while no write can fill
    an MSS (the MSS read from TCP_INFO tcpi_snd_mss of a client connection: mss_cache,
    which tcp_sync_mss (tcp_output.c) bounds at half the largest window the peer offered,
    tcp_bound_to_half_wnd in include/net/tcp.h, so it is below the device's MSS on a new
    connection)."""
    if mss is None:
        return ""
    if size < mss:
        return (
            f"; the {size:,} B writes here never fill an MSS ({mss:,} B, tcpi_snd_mss), so "
            "each counted segment is one captured packet"
        )
    return (
        f"; writes of {size:,} B fill the MSS ({mss:,} B, tcpi_snd_mss), so a capture can "
        "show fewer, larger packets than the counts"
    )


def _notes(report: Report, p: Params, mss: int | None) -> None:
    report.notes.extend(
        [
            "TCP is a byte stream: a receiver that reads late gets every write merged, whatever "
            "Nagle does, and recv(n) may split a write. Message boundaries need framing "
            "(sockprobe framing); TCP_NODELAY is a latency setting, not a framing fix.",
            "Nagle's algorithm as Linux runs it is Minshall's variant (tcp_output.c "
            "tcp_nagle_check, tcp_minshall_check): a segment smaller than the MSS waits while "
            "an earlier small segment is unacknowledged, and leaves once that ACK comes. RFC "
            "896's rule holds small data while any data is unacknowledged; Minshall's lets a "
            "small write follow full-sized segments at once.",
            "Delayed ACKs: the receiver holds an ACK hoping to send it with data. Linux's "
            "timeout (ato) starts at TCP_ATO_MIN (40 ms) and grows only while segments arrive "
            "less than ato apart (tcp_input.c tcp_event_data_recv); for an interactive "
            "connection or a pushed segment the timer is capped at max(RTT, 40 ms) and at "
            "tcp_delack_max: 200 ms, or the route's rto_min when lower (`ip route ... rto_min`; "
            "tcp_output.c tcp_send_delayed_ack). In write-write-read ato stays at 40 ms on any "
            "path whose route sets no lower rto_min (the test suite checks it over a 100 ms "
            "delay line: stalled rounds cost 2 RTT + 40 ms), so a longer RTT adds round "
            "trips, not a longer delayed ACK. A new "
            "connection's first data starts a quick-ACK budget of up to 16 immediate ACKs "
            "(tcp_input.c tcp_incr_quickack, TCP_MAX_QUICKACKS). Nagle on one side and a "
            "delayed ACK on the other is the write-write-read stall.",
            "TCP_CORK (tcp(7)) holds partial segments until uncorked; it has no timer of its "
            "own. A corked tail with nothing in flight leaves when the zero-window-probe timer "
            "fires, max(RTO, 200 ms) after the last ACK (tcp_output.c "
            "__tcp_push_pending_frames -> tcp_check_probe_timer, tcp_probe0_base), so a larger "
            "RTO (a route's rto_min, a slow path) holds it longer. The right use is cork, write "
            "the pieces, uncork; MSG_MORE does the same for one send() call.",
            "Segments are counted on the sender from TCP_INFO (tcp(7)) over the writes: data "
            "segments = the tcpi_data_segs_out delta minus the tcpi_total_retrans delta, "
            "retransmitted = the tcpi_total_retrans delta (on a loaded host a late ACK can make "
            "the sender resend a segment, by a loss probe or a timeout, even on loopback). "
            "TCP_INFO counts segments as TCP cut them, at most one MSS each. When the kernel "
            "passes several of them to the network device as one large packet (GSO), the "
            "counters count each one while a capture shows one packet"
            + _gso_clause(p.size, mss)
            + ". To check: tcpdump -i lo -nn 'tcp src port <client port>' during a run, "
            "counting lines with a length above 0 (ports are under Endpoints).",
            "The concurrent receiver is a child process (a thread would wait for this "
            "interpreter's GIL while the writer loops) on a CPU of its own, the writer on "
            "another (sched_setaffinity), already blocked in recv() when the first write is "
            "made. Each read lets the kernel ACK at once, which frees the congestion window "
            "sooner. How often it runs during the writes still depends on scheduling (the "
            "recv() calls column shows it), so that table is context, not a property of the "
            "host.",
            "Merging also depends on the congestion control (tcp_congestion_control: the "
            "attribution table names the one each connection ran) and "
            "net.ipv4.tcp_autocorking, shown under Kernel settings.",
            "macOS (documented, not measured here): TCP_NOPUSH instead of TCP_CORK, delayed "
            "ACKs up to about 100 ms, TCP_INFO absent (TCP_CONNECTION_INFO instead). Windows: "
            "no cork, delayed ACK 200 ms by default, SIO_TCP_INFO instead of TCP_INFO.",
        ]
    )
