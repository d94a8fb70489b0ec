"""--wait: wait a server-side TIME_WAIT of the matrix out (about 60 s), reading the
kernel's timer as it goes, then bind the port with no option at all."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sockprobe.probes.reuseaddr.common import TIME_WAIT, Ctx
from sockprobe.probes.reuseaddr.matrix import Outcome
from sockprobe.probes.reuseaddr.params import Progress
from sockprobe.report import VOLATILE, Report, col
from sockprobe.status import DeadlineExceeded, oserror_name

#: The kernel removes a TIME_WAIT socket from a coarse timer wheel, so it can disappear
#: somewhat after its timer reads 0 (measured here: 0.1 to 1.2 s after a 59 s timer).
TIMER_SLACK = 1.15


@dataclass
class WaitResult:
    row: int
    tw_left_at_start: float
    waited_s: float
    tw_after: int
    bind: str


def target(outcomes: list[Outcome]) -> Outcome | None:
    return next(
        (
            o
            for o in outcomes
            if o.sc.closes_first == "server"
            and not o.sc.listener_open
            and isinstance(o.tw_on_port, int)
            and o.tw_on_port > 0
        ),
        None,
    )


def wait_out(ctx: Ctx, o: Outcome, progress: Progress | None) -> WaitResult:
    """Wait until no TIME_WAIT holds the row's port, then bind it with no option."""
    lab, dl = ctx.lab, ctx.deadline

    def left() -> tuple[int, float]:
        tws = [r for r in ctx.watch.rows((o.port,)) if r.state == TIME_WAIT and r.lport == o.port]
        return len(tws), max((r.left_s for r in tws), default=0.0)

    n, start_left = left()
    if start_left * TIMER_SLACK + 1.0 > dl.remaining():
        raise DeadlineExceeded(
            f"--wait: TIME_WAIT on port {o.port} has {start_left:.0f} s left but --deadline "
            f"leaves {dl.remaining():.0f} s; rerun with --deadline {int(start_left) + 30}"
        )
    t0 = time.monotonic()
    now_left = start_left
    while n:
        if progress is not None:
            progress(
                f"TIME_WAIT on port {o.port}: {now_left:.1f} s left on the kernel's timer, "
                f"waited {time.monotonic() - t0:.1f} s"
            )
        time.sleep(dl.timeout(0.25, "waiting TIME_WAIT out"))
        n, now_left = left()
    waited = time.monotonic() - t0
    if progress is not None:
        progress(f"TIME_WAIT on port {o.port}: gone after {waited:.1f} s")
    new = lab.open_socket()
    try:
        new.bind(ctx.host.sockaddr(o.port))
        result = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(new)
    return WaitResult(o.index, round(start_left, 2), round(waited, 2), n, result)


def table(report: Report, w: WaitResult) -> None:
    t = report.table(
        "wait",
        "Waiting TIME_WAIT out (--wait), then a plain bind",
        [
            col("row"),
            col("tw_left_at_start_s", "TIME_WAIT left at start", "s", VOLATILE),
            col("waited_s", "waited", "s", VOLATILE),
            col("tw_after", "TIME_WAIT left after"),
            col("bind", "plain bind"),
        ],
        keys=["row"],
    )
    t.add(w.row, w.tw_left_at_start, w.waited_s, w.tw_after, w.bind)


def findings(report: Report, w: WaitResult) -> None:
    report.findings.append(
        f"--wait: row {w.row}'s TIME_WAIT ({w.tw_left_at_start:.1f} s left) was gone after "
        f"{w.waited_s:.1f} s; a bind without any option then gave {w.bind}."
    )
