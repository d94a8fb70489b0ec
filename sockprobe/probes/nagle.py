"""sockprobe nagle: what small writes become on the wire, and what write-write-read costs.

Three experiments, each on fresh loopback connections:

1. Coalescing: N back-to-back writes of S bytes per mode (Nagle, TCP_NODELAY, TCP_CORK),
   counting the data segments the kernel actually sent from the deltas of TCP_INFO
   `tcpi_data_segs_out` and `tcpi_total_retrans` (tcp(7)), with the receiver idle until
   the writer is done, or reading concurrently.
2. Attribution: the same writes again, with a TCP_INFO snapshot after every write that
   says why that write's bytes were not sent at once (Nagle, a full congestion window,
   cork, or something else). Snapshots cost a system call per write and change the
   timing, so this pass never feeds the counts of experiment 1.
3. Write-write-read: a request written in two pieces, then a wait for the reply. With
   Nagle the second piece waits for the ACK of the first, and the peer delays that ACK
   because it has nothing to send until it has the whole request.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe import kernel
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes import ProbeParams, Stopwatch, plural, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import Unsupported

MODES = ("nagle", "nodelay", "cork")
#: cork-held never uncorks: it shows the 200 ms ceiling tcp(7) puts on TCP_CORK.
ALL_MODES = (*MODES, "cork-held")
READERS = ("idle", "concurrent", "both")
RECV_SIZE = 65536
#: Pause between the reader process signalling and the first write, so that it is
#: inside recv() by then.
READER_SETTLE_S = 0.01
#: A round trip at least this long counts as stalled (Linux's minimum delayed-ACK
#: timeout is 40 ms, TCP_DELACK_MIN; a loopback round trip without it is microseconds).
STALL_MS = 30.0
SYSCTLS = ("net.ipv4.tcp_autocorking", "net.ipv4.tcp_congestion_control")
TCP_CORK = getattr(socket, "TCP_CORK", None)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", None)
NO_TCP_INFO = "TCP_INFO (tcpi_data_segs_out) is not available on this platform"


@dataclass(frozen=True)
class Params(ProbeParams):
    writes: int = 100
    size: int = 10
    rounds: int = 20
    modes: tuple[str, ...] = MODES
    reader: str = "both"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.writes <= 100_000, f"--writes must be 1..100000, not {self.writes}")
        require(1 <= self.size <= 65_536, f"--size must be 1..65536 bytes, not {self.size}")
        require(1 <= self.rounds <= 10_000, f"--rounds must be 1..10000, not {self.rounds}")
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in ALL_MODES, f"--mode {m!r}: choose from {', '.join(ALL_MODES)}")
        require(
            self.reader in READERS, f"--reader {self.reader!r}: choose from {', '.join(READERS)}"
        )


# -- socket set-up per mode ---------------------------------------------------------------
def _configure(mode: str) -> Callable[[socket.socket], None]:
    def configure(s: socket.socket) -> None:
        if mode == "nodelay":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    return configure


def _cork(s: socket.socket, on: bool) -> None:
    assert TCP_CORK is not None
    s.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1 if on else 0)


def _corks(mode: str) -> bool:
    return mode in ("cork", "cork-held")


def _sent(s: socket.socket) -> tuple[int, int] | None:
    """(tcpi_data_segs_out, tcpi_total_retrans) of a sender: data segments sent so far,
    retransmissions included, and how many of them were retransmissions (tcp(7))."""
    info = kernel.tcp_info(s)
    if info is None or info.data_segs_out is None:
        return None
    return info.data_segs_out, info.total_retrans


def _delta(
    before: tuple[int, int] | None, after: tuple[int, int] | None
) -> tuple[int | None, int | None]:
    """(new data segments, retransmitted segments) between two `_sent` snapshots: the
    segments the writes became, and the extra copies the sender resent."""
    if before is None or after is None:
        return None, None
    retrans = after[1] - before[1]
    return after[0] - before[0] - retrans, retrans


def _wait_drained(s: socket.socket, deadline: Deadline, cap: float = 3.0) -> None:
    """Wait until everything written has been sent and acknowledged (TCP_INFO
    notsent_bytes == 0 and unacked == 0), so the segment count is final. Off Linux,
    SIOCOUTQ is unknown too and a short pause stands in."""
    end = time.monotonic() + deadline.timeout(cap, "waiting for the send queue to drain")
    while time.monotonic() < end:
        info = kernel.tcp_info(s)
        if info is None:
            time.sleep(0.05)
            return
        if not info.notsent_bytes and info.unacked == 0:
            return
        time.sleep(0.0005)
    deadline.check("waiting for the send queue to drain")


def _recv_exact(s: socket.socket, total: int, deadline: Deadline, doing: str) -> list[int]:
    """Read `total` bytes; return the size of every recv() that returned data."""
    sizes: list[int] = []
    got = 0
    while got < total:
        s.settimeout(deadline.timeout(5.0, doing))
        chunk = s.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError(f"peer closed after {got} of {total} bytes while {doing}")
        sizes.append(len(chunk))
        got += len(chunk)
    return sizes


#: The concurrent receiver runs in a child process: a thread of this interpreter would
#: wait for the GIL while the writer loops (the writer takes it back after every send()),
#: so it often read nothing until the writes were over and the run measured an idle
#: receiver again. The child inherits the accepted socket's fd, says "ready" once it is
#: about to block in recv(), and prints the size of every recv() as JSON at the end.
_READER_CHILD = """
import json, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
total, s_timeout = int(sys.argv[2]), float(sys.argv[3])
s.settimeout(s_timeout)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sizes, got = [], 0
while got < total:
    chunk = s.recv(int(sys.argv[4]))
    if not chunk:
        break
    sizes.append(len(chunk))
    got += len(chunk)
s.detach()
sys.stdout.write(json.dumps(sizes) + "\\n")
"""


def _start_reader(lab: Lab, s: socket.socket, total: int) -> subprocess.Popen[bytes]:
    timeout = lab.deadline.timeout(10.0, "starting the reader")
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _READER_CHILD,
        str(s.fileno()),
        str(total),
        f"{timeout:.3f}",
        str(RECV_SIZE),
    ]
    proc = lab.process(argv, pass_fds=(s.fileno(),))
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(lab.deadline.timeout(5.0, "starting the reader")):
            lab.deadline.check("starting the reader")
            raise RuntimeError("the reader process did not start within 5 s")
    if proc.stdout.readline() != b"ready\n":
        raise RuntimeError(
            "the reader process failed to start: "
            + (proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else "")
        )
    return proc


def _pin_apart(child_pid: int) -> set[int] | None:
    """Put the writer (this thread) and the reader process on different CPUs, and return
    this thread's previous CPU set so the caller can restore it; None where there is only
    one CPU or affinity cannot be set (not Linux). Left to the scheduler, a woken reader
    is often placed on the writer's CPU and only runs once the writes are over, which
    makes the run measure an idle receiver again (about half the runs here)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        mine = os.sched_getaffinity(0)
        if len(mine) < 2:
            return None
        writer_cpu, reader_cpu = sorted(mine)[:2]
        os.sched_setaffinity(child_pid, {reader_cpu})
        os.sched_setaffinity(0, {writer_cpu})  # 0: the calling thread only (Linux)
    except OSError:
        return None
    return mine


def _reader_sizes(lab: Lab, proc: subprocess.Popen[bytes]) -> list[int]:
    try:
        out, err = proc.communicate(timeout=lab.deadline.timeout(10.0, "reading concurrently"))
    except subprocess.TimeoutExpired:
        lab.deadline.check("reading concurrently")
        raise RuntimeError("the reader process did not finish within 10 s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the reader process failed: {err.decode(errors='replace')[-300:]}")
    sizes: list[int] = json.loads(out.decode().strip().splitlines()[-1])
    return sizes


def _result(w: Worker, deadline: Deadline, doing: str) -> Any:
    """Join a Lab worker and return its result, re-raising its exception. The worker's
    own socket calls are bounded by the deadline too, so a join that runs out means the
    deadline did (or the thread hung, which is a bug worth a clear message)."""
    if not w.join(deadline.timeout(5.0, doing)):
        deadline.check(doing)
        raise RuntimeError(f"the thread {doing} did not finish within 5 s")
    if w.error is not None:
        raise w.error
    return w.result


def _sizes_text(sizes: list[int]) -> str:
    """[10, 10, 990] -> '10 x2, 990'."""
    if not sizes:
        return "-"
    parts = []
    for size, n in Counter(sizes).most_common(4):
        parts.append(f"{size} x{n}" if n > 1 else f"{size}")
    if len(Counter(sizes)) > 4:
        parts.append("...")
    return ", ".join(parts)


# -- experiment 1: coalescing ---------------------------------------------------------------
@dataclass
class Coalesce:
    mode: str
    reader: str
    #: Data segments the writes became (retransmissions left out), and retransmissions.
    segments: int | None
    retrans: int | None
    recv_sizes: list[int]
    bytes_sent: int


def _coalesce(lab: Lab, mode: str, reader: str, p: Params) -> Coalesce:
    c, s = lab.tcp_pair(configure_client=_configure(mode), name=f"coalesce {mode}/{reader}")
    payload = b"x" * p.size
    total = p.writes * p.size
    child = None
    pinned = None
    if reader == "concurrent":
        child = _start_reader(lab, s, total)
        pinned = _pin_apart(child.pid)
        # "ready" is written just before the child's first recv(); give it a moment to
        # be blocked there before the first write.
        time.sleep(READER_SETTLE_S)
    try:
        before = _sent(c)
        if _corks(mode):
            _cork(c, True)
        c.settimeout(lab.deadline.timeout(5.0, "writing"))
        for _ in range(p.writes):
            c.sendall(payload)
        if mode == "cork":
            _cork(c, False)  # uncorking pushes whatever is queued at once
        _wait_drained(c, lab.deadline, cap=3.0)
        after = _sent(c)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    if child is not None:
        sizes = _reader_sizes(lab, child)
    else:
        sizes = _recv_exact(s, total, lab.deadline, "reading after the writer finished")
    segs, retrans = _delta(before, after)
    lab.close(c)
    lab.close(s)
    return Coalesce(mode, reader, segs, retrans, sizes, total)


# -- experiment 2: attribution --------------------------------------------------------------
CAUSES = ("sent at once", "held by Nagle", "behind full cwnd", "corked", "held, window open")


@dataclass
class Attribution:
    mode: str
    causes: Counter[str] = field(default_factory=Counter)
    segments: int | None = None
    #: The largest tcpi_unacked seen after a write, and tcpi_snd_cwnd in that snapshot
    #: (-1 until the first snapshot, so that cwnd is never a placeholder 0).
    max_unacked: int = -1
    cwnd_at_max: int = 0
    autocork_delta: int | None = None
    congestion: str = ""


def _classify(mode: str, info: kernel.TcpInfo) -> str:
    """Why the bytes of the write just made are (or are not) on the wire yet.

    - nothing unsent: the write left at once;
    - unsent while tcpi_unacked >= tcpi_snd_cwnd: the congestion window is full;
    - corked: TCP_CORK holds partial segments (tcp(7));
    - Nagle (RFC 896, tcp(7)): a small segment is unacknowledged, so new small data waits;
    - otherwise something else held it with the window open (autocorking, TCP small
      queues or pacing); the TCPAutoCorking counter tells whether autocorking fired.
    """
    if not info.notsent_bytes:
        return "sent at once"
    if info.unacked >= info.snd_cwnd:
        return "behind full cwnd"
    if _corks(mode):
        return "corked"
    if mode == "nagle" and info.unacked > 0:
        return "held by Nagle"
    return "held, window open"


def _autocorking() -> int | None:
    return kernel.netstat_counters().get("TcpExt", {}).get("TCPAutoCorking")


def _attribute(lab: Lab, mode: str, p: Params) -> Attribution | None:
    c, s = lab.tcp_pair(configure_client=_configure(mode), name=f"attribution {mode}")
    att = Attribution(mode)
    if TCP_CONGESTION is not None:
        try:
            att.congestion = (
                c.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0")[0].decode()
            )
        except OSError:
            pass
    payload = b"x" * p.size
    before = _sent(c)
    ac0 = _autocorking()
    if _corks(mode):
        _cork(c, True)
    c.settimeout(lab.deadline.timeout(5.0, "writing"))
    for _ in range(p.writes):
        c.sendall(payload)
        info = kernel.tcp_info(c)
        if info is None:
            lab.close(c)
            lab.close(s)
            return None
        att.causes[_classify(mode, info)] += 1
        if info.unacked > att.max_unacked:
            att.max_unacked, att.cwnd_at_max = info.unacked, info.snd_cwnd
    if mode == "cork":
        _cork(c, False)
    _wait_drained(c, lab.deadline)
    after = _sent(c)
    ac1 = _autocorking()
    att.segments, _ = _delta(before, after)
    att.autocork_delta = None if ac0 is None or ac1 is None else ac1 - ac0
    _recv_exact(s, p.writes * p.size, lab.deadline, "draining the attribution pass")
    lab.close(c)
    lab.close(s)
    return att


# -- experiment 3: write-write-read ---------------------------------------------------------
@dataclass
class Wwr:
    mode: str
    rtts_ms: list[float]
    #: Data segments the requests became over all rounds (retransmissions left out),
    #: and retransmissions.
    segments: int | None
    retrans: int | None
    server_ato_ms: float | None

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
        return sum(1 for r in self.rtts_ms if r >= STALL_MS)


def _serve(s: socket.socket, rounds: int, size: int, deadline: Deadline) -> float | None:
    """Server side: read the whole two-piece request, then reply with one write. Returns
    the server's delayed-ACK timeout (tcpi_ato) at the end, in ms."""
    reply = b"r" * size
    for _ in range(rounds):
        _recv_exact(s, 2 * size, deadline, "serving write-write-read")
        s.sendall(reply)
    info = kernel.tcp_info(s)
    return None if info is None else info.ato_us / 1000


def _write_write_read(lab: Lab, mode: str, p: Params) -> Wwr:
    c, s = lab.tcp_pair(configure_client=_configure(mode), name=f"write-write-read {mode}")
    server = lab.thread(_serve, s, p.rounds, p.size, lab.deadline, name="sockprobe-nagle-srv")
    piece = b"q" * p.size
    rtts: list[float] = []
    before = _sent(c)
    if mode == "cork-held":
        _cork(c, True)  # and never released: every request waits for the cork timer
    for _ in range(p.rounds):
        c.settimeout(lab.deadline.timeout(5.0, f"write-write-read ({mode})"))
        t0 = time.perf_counter()
        if mode == "cork":
            _cork(c, True)
        c.sendall(piece)
        c.sendall(piece)
        if mode == "cork":
            _cork(c, False)
        got = 0
        while got < p.size:
            chunk = c.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionError("server closed during write-write-read")
            got += len(chunk)
        rtts.append((time.perf_counter() - t0) * 1000)
    after = _sent(c)
    ato_ms: float | None = _result(server, lab.deadline, "serving write-write-read")
    lab.close(c)
    lab.close(s)
    segs, retrans = _delta(before, after)
    return Wwr(mode, rtts, segs, retrans, ato_ms)


# -- the probe --------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "nagle", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    modes = [m for m in ALL_MODES if m in params.modes]
    if TCP_CORK is None:
        skipped = [m for m in modes if _corks(m)]
        modes = [m for m in modes if not _corks(m)]
        if skipped and not modes:
            raise Unsupported(
                f"--mode {', '.join(skipped)}: TCP_CORK does not exist on this platform"
            )
        if skipped:
            report.notes.append(
                f"{', '.join(skipped)}: TCP_CORK does not exist on this "
                "platform (macOS has TCP_NOPUSH, Windows neither)."
            )
    readers = ["idle", "concurrent"] if params.reader == "both" else [params.reader]
    with Lab(host, deadline) as lab:
        coalesced = [_coalesce(lab, m, r, params) for r in readers for m in modes]
        attributions = [a for m in modes if (a := _attribute(lab, m, params)) is not None]
        wwr = [_write_write_read(lab, m, params) for m in modes]
        report.endpoints = lab.endpoints
    _tables(report, params, coalesced, attributions, wwr)
    _findings(report, params, coalesced, attributions, wwr)
    _notes(report)
    report.duration_s = watch()
    return report


def _tables(
    report: Report,
    p: Params,
    coalesced: list[Coalesce],
    attributions: list[Attribution],
    wwr: list[Wwr],
) -> None:
    columns = [
        "mode",
        "receiver",
        "writes",
        "bytes",
        "data segments",
        "bytes/segment",
        "retransmitted",
        "recv() calls",
        "recv() sizes",
    ]
    measured = ["data segments", "bytes/segment", "retransmitted", "recv() calls", "recv() sizes"]
    for reader, title, volatile, context in (
        ("idle", "receiver idle until the writer finished", measured, []),
        # With a concurrent reader the counts follow thread scheduling from run to run,
        # so `diff` treats them as context, not as a property of the host.
        ("concurrent", "receiver reading concurrently", [], measured),
    ):
        rows = [co for co in coalesced if co.reader == reader]
        if not rows:
            continue
        t = legacy_table(
            report,
            f"Coalescing: {p.writes} writes of {p.size} B per mode, {title}",
            columns,
            ["", "", "", "B", "", "B", "segments", "", "B"],
            volatile=volatile,
            context=context,
        )
        for co in rows:
            segs: Cell = NA(NO_TCP_INFO) if co.segments is None else co.segments
            per: Cell = (
                NA(NO_TCP_INFO)
                if co.segments is None
                else round(co.bytes_sent / co.segments, 1)
                if co.segments
                else None
            )
            t.add(
                co.mode,
                co.reader,
                p.writes,
                co.bytes_sent,
                segs,
                per,
                NA(NO_TCP_INFO) if co.retrans is None else co.retrans,
                len(co.recv_sizes),
                _sizes_text(co.recv_sizes),
            )

    if attributions:
        a = legacy_table(
            report,
            "Why writes were not sent at once (separate pass, receiver idle, "
            "TCP_INFO after each write)",
            [
                "mode",
                "congestion control",
                *CAUSES,
                "data segments (this pass)",
                "max unacked",
                "cwnd then",
                "TCPAutoCorking Δ (host-wide)",
            ],
            volatile=[*CAUSES, "data segments (this pass)", "max unacked", "cwnd then"],
            context=["TCPAutoCorking Δ (host-wide)"],
        )
        for at in attributions:
            a.add(
                at.mode,
                at.congestion or None,
                *[at.causes.get(c, 0) for c in CAUSES],
                at.segments,
                at.max_unacked,
                at.cwnd_at_max,
                at.autocork_delta,
            )
    elif coalesced:
        report.notes.append(f"Attribution skipped: {NO_TCP_INFO}.")

    w = legacy_table(
        report,
        f"Write-write-read: {p.rounds} rounds of two {p.size} B writes, then a {p.size} B reply",
        [
            "mode",
            "median",
            "p90",
            "max",
            f"stalled >= {STALL_MS:g} ms",
            "data segments/request",
            "retransmitted",
            "server ACK timeout (tcpi_ato)",
        ],
        ["", "ms", "ms", "ms", "rounds", "", "segments", "ms"],
        volatile=[
            "median",
            "p90",
            "max",
            f"stalled >= {STALL_MS:g} ms",
            "data segments/request",
            "retransmitted",
            "server ACK timeout (tcpi_ato)",
        ],
    )
    for r in wwr:
        per = r.per_request
        per_req: Cell = NA(NO_TCP_INFO) if per is None else round(per, 2)
        retrans: Cell = NA(NO_TCP_INFO) if r.retrans is None else r.retrans
        ato: Cell = NA(NO_TCP_INFO) if r.server_ato_ms is None else r.server_ato_ms
        w.add(r.mode, r.median, r.p90, max(r.rtts_ms), r.stalled, per_req, retrans, ato)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.1f}"


def _findings(
    report: Report,
    p: Params,
    coalesced: list[Coalesce],
    attributions: list[Attribution],
    wwr: list[Wwr],
) -> None:
    labels = {
        "nagle": "with Nagle",
        "nodelay": "with TCP_NODELAY",
        "cork": "with TCP_CORK",
        "cork-held": "with TCP_CORK held",
    }
    cap = {m: "W" + text[1:] for m, text in labels.items()}
    for reader in ("idle", "concurrent"):
        rows = [c for c in coalesced if c.reader == reader and c.segments is not None]
        if not rows:
            continue
        parts = [
            (f"{plural(c.segments, 'data segment')} " if i == 0 else f"{c.segments} ")
            + labels[c.mode]
            + (f" (and {c.retrans} retransmitted)" if c.retrans else "")
            for i, c in enumerate(rows)
            if c.segments is not None
        ]
        calls = [len(c.recv_sizes) for c in rows]
        lo, hi = min(calls), max(calls)
        span = (
            f"{lo} recv({RECV_SIZE}) call" + ("" if lo == 1 else "s")
            if lo == hi
            else f"{lo} to {hi} recv({RECV_SIZE}) calls"
        )
        who = (
            "the receiver idle until the writer finished"
            if reader == "idle"
            else "the receiver reading concurrently"
        )
        report.findings.append(
            f"With {who}, {p.writes} writes of {p.size} B left as "
            + ", ".join(parts)
            + f"; the receiver needed {span} per mode to read them."
        )
    for at in attributions:
        held = {k: v for k, v in at.causes.items() if k != "sent at once" and v}
        if not held:
            report.findings.append(
                f"{cap[at.mode]}: every write was sent at once (no unsent bytes after any write)."
            )
            continue
        why = "; ".join(
            f"{n} {_cause_text(k, at)}" for k, n in sorted(held.items(), key=lambda kv: -kv[1])
        )
        ac = (
            ""
            if at.autocork_delta is None
            else f" TCPAutoCorking moved by {at.autocork_delta} (host-wide)."
        )
        sent = at.causes.get("sent at once", 0)
        rest = f"; {sent} were sent at once" if sent else ""
        report.findings.append(f"{cap[at.mode]}, of {p.writes} writes: {why}{rest}.{ac}")
    by_mode = {r.mode: r for r in wwr}
    if "nagle" in by_mode and "nodelay" in by_mode:
        report.findings.append(_wwr_text(by_mode["nagle"], by_mode["nodelay"], p.rounds))
    if "cork" in by_mode:
        c = by_mode["cork"]
        per = c.per_request
        segs = "" if per is None else f", {per:.2f} data segments per request"
        report.findings.append(f"Cork, write both pieces, uncork: median {_ms(c.median)} ms{segs}.")
    if "cork-held" in by_mode:
        c = by_mode["cork-held"]
        report.findings.append(
            f"A cork never released: median {_ms(c.median)} ms per request; tcp(7) puts a "
            "200 ms ceiling on how long TCP_CORK holds a partial segment."
        )
    report.summary = report.findings[-1] if not wwr else _headline(by_mode, coalesced)


def _wwr_text(n: Wwr, d: Wwr, rounds: int) -> str:
    """Nagle against TCP_NODELAY in write-write-read. The delayed-ACK explanation is
    given only for rounds that did stall, next to the server's tcpi_ato it rests on."""
    text = (
        f"Write-write-read: median round trip {_ms(n.median)} ms with Nagle vs "
        f"{_ms(d.median)} ms with TCP_NODELAY"
    )
    if n.median > d.median > 0:
        ratio = n.median / d.median
        text += f" ({ratio:,.0f}x slower)" if ratio >= 10 else f" ({ratio:.1f}x slower)"
    if not n.stalled:
        return text + (
            f"; no Nagle round took >= {STALL_MS:g} ms in {plural(rounds, 'round')} (a new "
            "connection starts in quick-ACK mode, tcp(7) TCP_QUICKACK: more --rounds show "
            "the stall)."
        )
    text += f"; {n.stalled} of {len(n.rtts_ms)} Nagle rounds took >= {STALL_MS:g} ms"
    if n.server_ato_ms is not None:
        text += f", and the server's delayed-ACK timeout (tcpi_ato) read {n.server_ato_ms:.0f} ms"
    per = n.per_request
    if per is not None:
        text += f"; each request went out as {per:.2f} data segments"
    return text + (
        ". The documented mechanism: Nagle holds the second piece until the first is "
        "acknowledged, and the server delays that ACK because it has nothing to send "
        "until it has the whole request."
    )


def _headline(by_mode: dict[str, Wwr], coalesced: list[Coalesce]) -> str:
    parts = []
    idle = {c.mode: c.segments for c in coalesced if c.reader == "idle"}
    if idle and all(v is not None for v in idle.values()):
        parts.append("segments " + "/".join(f"{m} {v}" for m, v in idle.items()))
    parts.append(
        "write-write-read median "
        + ", ".join(f"{m} {_ms(r.median)} ms" for m, r in by_mode.items())
    )
    return "; ".join(parts)


def _cause_text(cause: str, at: Attribution) -> str:
    if cause == "held by Nagle":
        return "waited while a small segment was unacknowledged (Nagle's rule)"
    if cause == "behind full cwnd":
        return (
            f"queued behind a full congestion window (unacked reached "
            f"{at.max_unacked}, cwnd {at.cwnd_at_max})"
        )
    if cause == "corked":
        return "were held by TCP_CORK"
    return "were held with the congestion window open (autocorking, TCP small queues or pacing)"


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "TCP is a byte stream: a receiver that reads late gets every write merged, whatever "
            "Nagle does, and recv(n) may split a write. Message boundaries need framing "
            "(sockprobe framing); TCP_NODELAY is a latency setting, not a framing fix.",
            "Nagle's algorithm (RFC 896, tcp(7) TCP_NODELAY): while a small segment is "
            "unacknowledged, further small writes wait and leave together once the ACK comes.",
            "The receiver delays ACKs hoping to piggyback them on data (Linux: 40 ms at least "
            "by default, tcpi_ato shows the current timeout; a new connection starts in "
            "quick-ACK mode, tcp(7) TCP_QUICKACK). Nagle on one side and a delayed ACK on the "
            "other is the write-write-read stall.",
            "TCP_CORK (tcp(7)) holds partial segments until uncorked, at most 200 ms; the right "
            "use is cork, write the pieces, uncork.",
            "Segments are counted on the sender from TCP_INFO (tcp(7)) over the writes: data "
            "segments = the tcpi_data_segs_out delta minus the tcpi_total_retrans delta, "
            "retransmitted = the tcpi_total_retrans delta (on a loaded host a late ACK can make "
            "the sender resend a segment, by a loss probe or a timeout, even on loopback). "
            "Both count each segment a GSO packet carries, so a capture shows their sum as data "
            "packets while no segment is larger than the MSS. To check: tcpdump -i lo -nn "
            "--immediate-mode 'tcp src port <client port>' during a run, and count the lines "
            "whose length is above 0 (ports are under Endpoints).",
            "The concurrent receiver is a child process (a thread would wait for this "
            "interpreter's GIL while the writer loops) on a CPU of its own, the writer on "
            "another (sched_setaffinity), already blocked in recv() when the first write is "
            "made. Each read lets the kernel ACK at once, which frees the congestion window "
            "sooner. How often it runs during the writes still depends on scheduling (the "
            "recv() calls column shows it), so that table is context, not a property of the "
            "host.",
            "Merging also depends on the congestion control (tcp_congestion_control) and "
            "net.ipv4.tcp_autocorking, shown under Kernel settings.",
            "macOS: TCP_NOPUSH instead of TCP_CORK, delayed ACKs up to about 100 ms, TCP_INFO "
            "absent (TCP_CONNECTION_INFO instead). Windows: no cork, delayed ACK 200 ms by "
            "default, SIO_TCP_INFO instead of TCP_INFO.",
        ]
    )
