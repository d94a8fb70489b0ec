"""Coalescing: N back-to-back writes of S bytes per mode, and the data segments the
kernel actually sent for them.

Segments are counted on the sender from the deltas of TCP_INFO `tcpi_data_segs_out` and
`tcpi_total_retrans` (tcp(7)) over the writes, once everything is acknowledged. The
receiver is either idle until the writer is done or reading concurrently, in a child
process of its own on a CPU of its own (see `_READER_CHILD`).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes.nagle import _wire as w
from sockprobe.probes.nagle.params import Params
from sockprobe.report import CONTEXT, NA, VOLATILE, Cell, Report, col

#: Pause between the reader process signalling and the first write, so that it is
#: inside recv() by then.
READER_SETTLE_S = 0.01


@dataclass
class Coalesce:
    mode: str
    reader: str
    #: Data segments the writes became (retransmissions left out), and retransmissions.
    segments: int | None
    retrans: int | None
    recv_sizes: list[int]
    bytes_sent: int


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


def _start_reader(lab: Lab, fd: int, total: int) -> subprocess.Popen[bytes]:
    timeout = lab.deadline.timeout(10.0, "starting the reader")
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _READER_CHILD,
        str(fd),
        str(total),
        f"{timeout:.3f}",
        str(w.RECV_SIZE),
    ]
    proc = lab.process(argv, pass_fds=(fd,))
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


def measure(lab: Lab, mode: str, reader: str, p: Params) -> Coalesce:
    c, s = w.pair(lab, mode, f"coalesce {mode}/{reader}")
    payload = b"x" * p.size
    total = p.writes * p.size
    child = None
    pinned = None
    if reader == "concurrent":
        child = _start_reader(lab, s.fileno(), total)
        pinned = _pin_apart(child.pid)
        # "ready" is written just before the child's first recv(); give it a moment to
        # be blocked there before the first write.
        time.sleep(READER_SETTLE_S)
    try:
        before = w.sent(c)
        if w.corks(mode):
            w.cork(c, True)
        c.settimeout(lab.deadline.timeout(5.0, "writing"))
        for _ in range(p.writes):
            c.sendall(payload)
        if mode == "cork":
            w.cork(c, False)  # uncorking pushes whatever is queued at once
        w.wait_drained(c, lab.deadline, cap=3.0)
        after = w.sent(c)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    if child is not None:
        sizes = _reader_sizes(lab, child)
    else:
        sizes = w.recv_exact(s, total, lab.deadline, "reading after the writer finished")
    segs, retrans = w.delta(before, after)
    lab.close_abortively(c, s)
    return Coalesce(mode, reader, segs, retrans, sizes, total)


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


TITLES = {
    "idle": "receiver idle until the writer finished",
    "concurrent": "receiver reading concurrently",
}


def table(report: Report, p: Params, rows: list[Coalesce], reader: str) -> None:
    """Table `coalescing_idle` or `coalescing_concurrent`, keyed by mode. With a
    concurrent reader the counts follow scheduling from run to run, so that table's
    measured columns are context, not a property of the host."""
    kind = VOLATILE if reader == "idle" else CONTEXT
    t = report.table(
        f"coalescing_{reader}",
        f"Coalescing: {p.writes} writes of {p.size} B per mode, {TITLES[reader]}",
        [
            col("mode"),
            col("writes"),
            col("bytes", unit="B"),
            col("data_segments", "data segments", "", kind),
            col("bytes_per_segment", "bytes/segment", "B", kind),
            col("retransmitted", "retransmitted", "segments", kind),
            col("recv_calls", "recv() calls", "", kind),
            col("recv_sizes", "recv() sizes", "B", kind),
        ],
        keys=["mode"],
    )
    for co in rows:
        segs: Cell = NA(w.NO_TCP_INFO) if co.segments is None else co.segments
        per: Cell = NA(w.NO_TCP_INFO)
        if co.segments is not None:
            per = (
                round(co.bytes_sent / co.segments, 1)
                if co.segments
                else NA("no data segment was counted")
            )
        t.add(
            co.mode,
            p.writes,
            co.bytes_sent,
            segs,
            per,
            NA(w.NO_TCP_INFO) if co.retrans is None else co.retrans,
            len(co.recv_sizes),
            _sizes_text(co.recv_sizes),
        )


def finding(p: Params, rows: list[Coalesce], reader: str) -> str | None:
    counted = [c for c in rows if c.segments is not None]
    if not counted:
        return None
    parts = [
        (f"{plural(c.segments or 0, 'data segment')} " if i == 0 else f"{c.segments} ")
        + w.LABELS[c.mode]
        + (f" (and {c.retrans} retransmitted)" if c.retrans else "")
        for i, c in enumerate(counted)
    ]
    calls = [len(c.recv_sizes) for c in counted]
    lo, hi = min(calls), max(calls)
    span = (
        f"{lo} recv({w.RECV_SIZE}) call" + ("" if lo == 1 else "s")
        if lo == hi
        else f"{lo} to {hi} recv({w.RECV_SIZE}) calls"
    )
    who = (
        "the receiver idle until the writer finished"
        if reader == "idle"
        else ("the receiver reading concurrently")
    )
    return (
        f"With {who}, {p.writes} writes of {p.size} B left as "
        + ", ".join(parts)
        + f"; the receiver needed {span} per mode to read them."
    )
