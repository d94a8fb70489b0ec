"""Timers: the remaining TIME_WAIT timer next to the orphaned FIN_WAIT2 timer, both read
from /proc and from sock_diag, beside net.ipv4.tcp_fin_timeout: the setting sets the
second (through the kernel's rule, kernel/timewait.orphan_fin_wait2_timer), never the
first (TIME_WAIT is TCP_TIMEWAIT_LEN, 60 s, compiled in)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import sockdiag
from sockprobe.kernel.timewait import TIMEWAIT_LEN_S, no_tw_reason, orphan_fin_wait2_timer
from sockprobe.probes.reuseaddr.common import (
    FIN_WAIT2,
    NO_PROC,
    SETTLE_CAP_S,
    TIME_WAIT,
    Ctx,
    Settings,
    connected,
    setting_cell,
)
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import oserror_name

#: A timer read within this much of the rule's value agrees with it: the read comes a
#: few ms after the state was entered, and /proc rounds to USER_HZ ticks.
AGREE_S = 1.0


@dataclass
class TimerRow:
    step: str
    label: str
    state: Cell
    proc_left: Cell
    diag_left: Cell
    #: What the kernel's rule says the timer starts at, from the settings.
    expected: float | None


def _row(
    ctx: Ctx, step: str, label: str, port: int, cport: int, want: int, expected: float | None
) -> TimerRow:
    """Poll until the server end (port -> cport) is in state `want`, then read its timer
    from /proc and from sock_diag."""
    end = time.monotonic() + ctx.deadline.timeout(SETTLE_CAP_S, "waiting for a state change")
    while True:
        rows = [
            r
            for r in kernel.proc_net_sockets(ctx.proto, port)
            if r.local[1] == port and r.remote[1] == cport
        ]
        row = rows[0] if rows else None
        if (row is not None and row.state == want) or time.monotonic() >= end:
            break
        time.sleep(0.001)
    if row is None or row.state != want:
        s = ctx.settings
        if s.max_tw_buckets == 0:
            # An orphaned FIN_WAIT2 with tcp_fin_timeout <= 60 s is a timewait
            # mini-socket too (tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)), so it is not
            # created either: the socket is closed at once.
            reason = no_tw_reason(0) + (
                " (an orphaned FIN_WAIT2 is kept as a timewait socket too)"
                if want == FIN_WAIT2
                else ""
            )
        else:
            seen = "no socket" if row is None else kernel.tcp_state_name(row.state)
            reason = f"the server end never reached {kernel.tcp_state_name(want)} ({seen})"
        na = NA(reason)
        return TimerRow(step, label, na, na, na, expected)
    diag: Cell
    try:
        found = [
            d
            for d in sockdiag.dump(ctx.host.family, port=port, meminfo=False)
            if d.remote[1] == cport
        ]
        diag = round(found[0].expires_ms / 1000, 2) if found else NA("not found by sock_diag")
    except OSError as exc:
        diag = NA(f"sock_diag unavailable: {oserror_name(exc)}")
    return TimerRow(
        step, label, kernel.tcp_state_name(row.state), round(row.timer_s, 2), diag, expected
    )


def measure(ctx: Ctx) -> list[TimerRow]:
    if not kernel.IS_LINUX:
        return []
    lab = ctx.lab
    lst = lab.listener(backlog=1, role="timers listener")
    client, server = connected(ctx, lst, "timers client")
    info = kernel.tcp_info(server)
    rto_s = None if info is None else info.rto_us / 1e6
    port, cport = lst.getsockname()[1], client.getsockname()[1]
    lab.close(lst)
    # The server closes; the client keeps its end open, so the server's socket is an
    # orphan in FIN_WAIT2: its lifetime is tcp_fin_timeout (tcp(7)), by the rule.
    lab.close(server)
    fw2 = _row(
        ctx,
        "orphan_fin_wait2",
        "server closed, client still open (orphan)",
        port,
        cport,
        FIN_WAIT2,
        orphan_fin_wait2_timer(ctx.settings.fin_timeout, rto_s),
    )
    # Now the client closes: the server's end enters TIME_WAIT for TCP_TIMEWAIT_LEN.
    client.settimeout(ctx.deadline.timeout(5.0, "reading EOF"))
    try:
        client.recv(1)
    except ConnectionResetError:
        pass  # the orphan was not kept (see the n/a reason): its peer is reset
    lab.close(client)
    tw = _row(ctx, "time_wait", "then the client closed", port, cport, TIME_WAIT, TIMEWAIT_LEN_S)
    return [fw2, tw]


def table(report: Report, rows: list[TimerRow], s: Settings) -> None:
    t = report.table(
        "timers",
        "Timers: orphaned FIN_WAIT2 vs TIME_WAIT, just after entering the state",
        [
            col("step"),
            col("server_end", "server end"),
            col("state"),
            col("proc_left_s", "timer left (/proc)", "s", VOLATILE),
            col("diag_left_s", "timer left (sock_diag)", "s", VOLATILE),
            col("rule_s", "kernel rule", "s"),
            col("tcp_fin_timeout", "tcp_fin_timeout", "s"),
        ],
        keys=["step"],
    )
    fin = setting_cell(s.fin_timeout, "net.ipv4.tcp_fin_timeout")
    if not rows:
        na = NA(NO_PROC)
        t.add("-", "-", na, na, na, na, fin)
    for r in rows:
        rule: Cell = NA("needs tcp_fin_timeout") if r.expected is None else round(r.expected, 2)
        t.add(r.step, r.label, r.state, r.proc_left, r.diag_left, rule, fin)


def follows(r: TimerRow) -> bool | None:
    if r.expected is None or not isinstance(r.proc_left, float):
        return None
    return abs(r.proc_left - r.expected) <= AGREE_S


def findings(report: Report, rows: list[TimerRow], s: Settings) -> None:
    tw = next((r for r in rows if r.step == "time_wait"), None)
    fw = next((r for r in rows if r.step == "orphan_fin_wait2"), None)
    if tw is None or fw is None:
        return
    parts = []
    if isinstance(fw.proc_left, float):
        verdict = {
            True: "as the kernel's rule gives",
            False: "NOT what the kernel's rule gives",
            None: "",
        }[follows(fw)]
        parts.append(
            f"the orphaned FIN_WAIT2 timer read {fw.proc_left:.2f} s with tcp_fin_timeout = "
            f"{s.fin_timeout} ({verdict}: {fw.expected:.2f} s)"
            if fw.expected is not None
            else f"the orphaned FIN_WAIT2 timer read {fw.proc_left:.2f} s"
        )
    elif isinstance(fw.state, NA):
        parts.append(f"no orphaned FIN_WAIT2 was seen ({fw.state.reason})")
    if isinstance(tw.proc_left, float):
        diag = f"{tw.diag_left:.2f} s" if isinstance(tw.diag_left, float) else "n/a"
        parts.append(
            f"the TIME_WAIT timer read {tw.proc_left:.2f} s (/proc; sock_diag {diag}), "
            f"TCP_TIMEWAIT_LEN whatever tcp_fin_timeout says"
        )
    elif isinstance(tw.state, NA):
        parts.append(f"no TIME_WAIT was measured ({tw.state.reason})")
    if s.fin_timeout == int(TIMEWAIT_LEN_S) and isinstance(tw.proc_left, float):
        parts.append(
            "tcp_fin_timeout equals the TIME_WAIT length here, so this run alone cannot "
            "tell which timer follows it (a namespace test sets it to 5)"
        )
    if parts:
        text = "; ".join(parts)
        report.findings.append(text[:1].upper() + text[1:] + ".")
