"""run(params) for `sockprobe port`: the diagnosis, then the action asked for (--check,
--wait, --kill), and the exit code. The CLI only wires it (see docs/port.md, "CLI")."""

from __future__ import annotations

import signal as signals
from typing import TYPE_CHECKING

from sockprobe import kernel
from sockprobe.lab import Deadline, resolve_host
from sockprobe.port import PortResult, advice, diagnosis, processes
from sockprobe.port.params import WAIT_UNTIL_DEADLINE, Params
from sockprobe.probes import Stopwatch
from sockprobe.report import VOLATILE, Report, col
from sockprobe.status import Unsupported, UsageError

if TYPE_CHECKING:  # imported when used: a plain diagnosis needs neither
    from sockprobe.port import kill, wait


def run_port(params: Params) -> PortResult:
    watch = Stopwatch()
    if params.kill and not params.yes and params.confirm is None:
        raise UsageError(
            "--kill asks before signalling, and there is no terminal to ask on: add --yes "
            "(nothing was signalled)"
        )
    if not kernel.IS_LINUX and not params.is_port:
        raise Unsupported("UNIX socket paths are read from /proc/net/unix, which is Linux only")
    extra = 0.0
    if params.wait is not None and params.wait != WAIT_UNTIL_DEADLINE:
        extra = params.wait  # the deadline bounds the diagnosis; --wait adds its own time
    if params.kill:
        extra += params.grace
    deadline = Deadline(params.deadline + extra)
    if not params.is_port:
        from sockprobe.port.unix import diagnose_unix

        report, fails = diagnose_unix(params, deadline)
        report.duration_s = watch()
        code = 1 if params.check and fails else 0
        return PortResult(
            report, code, {"free": {"plain": not fails, "reuseaddr": not fails}, "holders": []}
        )

    mode = "reuseaddr" if params.reuseaddr else "plain"
    result = PortResult(diagnosis.new_report(params))
    waited: wait.WaitResult | None = None
    if params.wait is not None:
        from sockprobe.port import wait

        host = resolve_host(params.host)
        from sockprobe.port import trial

        check = trial.check_address(params.parsed.address, host.is_v6)
        waited = wait.wait_free(params, check, host.address, deadline, params.progress)
    sc = diagnosis.gather(params, deadline)
    report = result.report
    diagnosis.tables(report, sc)
    diagnosis.endpoints(report, sc)
    found, headline = advice.findings(sc)
    report.summary = advice.summary(sc, headline)
    if waited is not None:
        _wait_report(report, sc, waited, mode)
    free = sc.free
    if params.kill:
        free = _kill(result, sc, deadline, free)
    signalled = any(
        a["action"] == "signal" and not str(a["result"]).startswith("declined")
        for a in result.actions
    )
    report.findings[:0] = found if not params.kill else []
    if params.kill and not signalled:
        report.findings.extend(found)  # nothing was sent: the diagnosis is still current
    elif params.kill:
        # The diagnosis was measured before the signal: say so, or its "Fix: stop pid N"
        # reads as advice about a port --kill has just freed.
        report.findings.extend(f"Before --kill: {_lower_first(f)}" for f in found)
        for t in report.tables:
            if t.id in ("sockets", "processes", "trials"):
                t.title = t.title.replace(" now (", " (").replace(" (", " before --kill (", 1)
    report.notes.extend(advice.NOTES)
    result.data = {"free": free, "holders": diagnosis.holders_json(sc)}
    if params.check or params.wait is not None or params.kill:
        result.exit_code = 0 if free[mode] else 1
    report.duration_s = watch()
    return result


def _lower_first(sentence: str) -> str:
    """ "A plain bind..." -> "a plain bind..."; "LISTEN on..." and "UDP..." stay."""
    word = sentence.split(" ", 1)[0]
    if word[:1].isupper() and (len(word) == 1 or not word[1:2].isupper()):
        return sentence[0].lower() + sentence[1:]
    return sentence


def _wait_report(report: Report, sc: diagnosis.Scene, w: wait.WaitResult, mode: str) -> None:
    t = report.table(
        "wait",
        f"--wait on port {sc.port}: what held it, polled with sock_diag ({w.polls} polls)",
        [col("step"), col("at_s", "at", "s", VOLATILE), col("held_by", "held by", kind=VOLATILE)],
        keys=["step"],
    )
    for i, (at, what) in enumerate(w.timeline):
        t.add(i + 1, round(at, 2), what)
    kind = "with SO_REUSEADDR" if mode == "reuseaddr" else "a plain bind"
    if w.free:
        first = w.timeline[0][1] if len(w.timeline) > 1 else ""
        report.findings.append(
            f"--wait: a new listener ({kind}) could start after {w.waited_s:.2f} s"
            + (f"; it was held by {first}." if first else " (it was free at once).")
        )
        report.summary = f"port {sc.port}: free after {w.waited_s:.2f} s of --wait"
    else:
        report.findings.append(f"--wait ran out after {w.waited_s:.2f} s: still held ({w.last}).")
        report.summary = f"port {sc.port}: still held after {w.waited_s:.2f} s of --wait ({w.last})"


def _kill(
    result: PortResult, sc: diagnosis.Scene, deadline: Deadline, free: dict[str, bool]
) -> dict[str, bool]:
    from sockprobe.port import kill, wait

    report = result.report
    p = kill.plan(sc)
    text = p.text(sc.port)
    name = signals.Signals(p.signal).name
    if not p.to_signal:
        report.findings.append(f"--kill: nothing to signal ({text}).")
    elif not sc.params.yes:
        assert sc.params.confirm is not None
        if not sc.params.confirm(text):
            for s in p.to_signal:
                s.result = "declined: not signalled"
            _kill_table(report, p, name)
            report.findings.append("--kill was declined: nothing was signalled.")
            report.summary = f"port {sc.port}: --kill declined; nothing signalled"
            result.actions = _actions(p, name)
            return free
    waited = kill.execute(p, sc, deadline) if p.to_signal else 0.0
    rows, after = kill.remaining(sc, p, deadline)
    _kill_table(report, p, name)
    result.actions = _actions(p, name)
    mode = "reuseaddr" if sc.params.reuseaddr else "plain"
    left = [r for r in rows if r.inode in p.inodes]
    tw = [r for r in rows if r.state == 6]
    signalled = [s.proc.pid for s in p.to_signal if s.result in ("exited", "still running")]
    head = (
        f"--kill sent {name} to {advice._pid_list(signalled)}"
        if signalled
        else "--kill signalled nothing"
    )
    if after[mode]:
        how = "with SO_REUSEADDR" if mode == "reuseaddr" else "a plain bind succeeds"
        outcome = (
            f"port {sc.port} is free now ({how}; measured by a trial bind after {waited:.2f} s)"
        )
    elif left:
        still = [s for s in p.steps if s.action != "signal" or s.result == "still running"]
        outcome = (
            f"port {sc.port} is still held after {waited:.2f} s by "
            + ", ".join(f"pid {s.proc.pid}" for s in still)
            + (
                " (--signal KILL, or a longer --grace)"
                if any(s.result == "still running" for s in still)
                else ""
            )
        )
    elif tw:
        secs = max(r.expires_ms for r in tw) / 1000
        outcome = (
            f"port {sc.port}: the holders are gone, {len(tw)} TIME_WAIT left, {secs:.0f} s "
            f"(a plain bind gives EADDRINUSE until then; --wait waits, --reuseaddr checks "
            f"for a server that sets SO_REUSEADDR: {'ok' if after['reuseaddr'] else 'fails too'})"
        )
    else:
        outcome = (
            f"port {sc.port}: a bind still fails after {waited:.2f} s "
            f"({wait.describe(rows, processes.Holders())})"
        )
    for s in p.steps:
        if s.action == "stop":
            outcome += f"; pid {s.proc.pid} was not signalled: {s.reason}" + (
                f", stop it with `{s.stop}`" if s.stop else ""
            )
    report.findings.insert(0, f"{head}: {outcome}.")
    report.summary = f"{head}: {outcome}"
    return after


def _kill_table(report: Report, p: kill.Plan, name: str) -> None:
    t = report.table(
        "kill",
        "--kill: what was done to each holder",
        [
            col("pid", kind=VOLATILE),
            col("action"),
            col("signal"),
            col("result"),
            col("stop", "stop command"),
            col("command", "command line"),
        ],
        keys=["pid"],
    )
    for s in p.steps:
        t.add(
            s.proc.pid,
            s.action,
            name if s.action == "signal" else "",
            s.result or s.reason,
            s.stop,
            s.proc.command(50),
        )


def _actions(p: kill.Plan, name: str) -> list[dict[str, object]]:
    return [
        {
            "pid": s.proc.pid,
            "action": s.action,
            "signal": name if s.action == "signal" else None,
            "result": s.result or s.reason,
            "stop": s.stop or None,
            "argv": list(s.proc.argv),
        }
        for s in p.steps
    ]
