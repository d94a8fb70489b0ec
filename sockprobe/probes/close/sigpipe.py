"""SIGPIPE: the disposition CPython leaves in this process, and a child process that
restores the default to show what C programs get on the same second send."""

from __future__ import annotations

import signal
import subprocess
import sys

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.report import NA, Report, col

#: The child: restore SIG_DFL, repeat peer_close_send, report how the second send ended.
#: It bounds itself (timeouts on every blocking call) and is killed after a deadline.
CHILD = r"""
import signal, socket, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
host = sys.argv[1]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
lst = socket.socket(fam)
lst.bind((host, 0))
lst.listen(1)
c = socket.socket(fam)
c.settimeout(5)
c.connect(lst.getsockname())
s, _ = lst.accept()
s.close()
lst.close()
time.sleep(0.02)
c.send(b"a")
end = time.monotonic() + 2
while time.monotonic() < end:
    if c.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 1)[0] == 7:
        break
    time.sleep(0.001)
try:
    c.send(b"b")
except OSError as exc:
    print("raised", type(exc).__name__)
else:
    print("returned")
"""


def here() -> str:
    sig = getattr(signal, "SIGPIPE", None)
    if sig is None:
        return "no SIGPIPE on this platform"
    handler = signal.getsignal(sig)
    if handler == signal.SIG_IGN:
        return "SIG_IGN"
    if handler == signal.SIG_DFL:
        return "SIG_DFL"
    return "a Python handler"


def child(lab: Lab) -> str | None:
    """peer_close_send in a child with SIGPIPE back at SIG_DFL. Returns how it ended."""
    if getattr(signal, "SIGPIPE", None) is None or not kernel.IS_LINUX:
        return None  # the child waits for the RST through Linux's TCP_INFO
    limit = lab.deadline.timeout(10.0, "running the SIGPIPE child process")
    try:
        # subprocess.run kills and reaps the child when the timeout expires.
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, lab.host.address],
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        lab.deadline.check("running the SIGPIPE child process")
        return f"did not finish within {limit:.1f} s (killed)"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = "?"
        return f"killed by signal {-proc.returncode} ({name})"
    lines = proc.stdout.strip() or (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"exited {proc.returncode}: {lines}"


def table(report: Report, in_here: str, in_child: str | None) -> None:
    t = report.table(
        "sigpipe",
        "SIGPIPE on a send to a reset connection",
        [col("process"), col("how"), col("result")],
        keys=["process"],
    )
    t.add("this_process", "signal.getsignal(SIGPIPE)", in_here)
    t.add(
        "child_sig_dfl",
        "peer_close_send with SIGPIPE = SIG_DFL",
        NA("needs SIGPIPE and TCP_INFO (Linux)") if in_child is None else in_child,
    )


def findings(report: Report, in_here: str, in_child: str | None) -> None:
    tail = (
        ""
        if in_child is None
        else f"; a child process with SIGPIPE restored to SIG_DFL was {in_child}"
        if in_child.startswith("killed")
        else f"; a child process with SIGPIPE restored to SIG_DFL {in_child}"
    )
    if in_here == "SIG_IGN":
        text = "SIG_IGN (CPython ignores it at start-up), so a write to a reset connection "
        text += "raises BrokenPipeError"
    else:
        text = f"{in_here} (something changed CPython's start-up SIG_IGN)"
    report.findings.append(
        f"SIGPIPE in this Python process: {text}{tail}"
        + (" on the same second send." if tail else ".")
    )
