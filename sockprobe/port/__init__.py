"""sockprobe port TARGET: who holds this port or UNIX socket name, who manages the
holder, would a new listener start now, and the way out (`--wait`, `--kill`).

One module per question (a diagnosis, not an experiment: it looks at the host as it is):

    params.py     the options, and the target as users paste it
    sockets.py    which sockets are on the port (sock_diag with an in-kernel filter)
    processes.py  which processes hold them (every one: the whole /proc/*/fd walk)
    managers.py   who runs those processes (systemd unit, container, socket activation,
                  forwarder)
    trial.py      would a bind succeed now (plain and SO_REUSEADDR), the port settings
    netns.py      the other network namespaces (--all-netns)
    advice.py     what to do: findings and the headline
    wait.py       --wait: until a new listener could start
    kill.py       --kill: signal the holders that block a bind
    unix.py       the UNIX socket path case
    diagnosis.py  gathers the above into one Scene, and the tables

`run(params)` returns a PortResult: the Report, the exit code, and `data` (the JSON
`free` and `holders` objects, which the CLI puts at the top level of the JSON output).
This module imports only params.py at import time: the CLI imports it to build the parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sockprobe.port.params import FALLBACK_ENV, SIGNALS, WAIT_UNTIL_DEADLINE, Params, Target

if TYPE_CHECKING:
    from sockprobe.report import Report

__all__ = [
    "FALLBACK_ENV",
    "SIGNALS",
    "WAIT_UNTIL_DEADLINE",
    "Params",
    "PortResult",
    "Target",
    "run",
]


class PortResult:
    """What run() returns (a plain class: a dataclass costs a millisecond at import)."""

    def __init__(
        self,
        report: Report,
        exit_code: int = 0,
        data: dict[str, Any] | None = None,
        actions: list[dict[str, Any]] | None = None,
    ) -> None:
        self.report = report
        #: 0 ran (with --check/--wait/--kill: a new listener could start now); 1 it could
        #: not (--check, --wait timed out, --kill left it held or was declined).
        self.exit_code = exit_code
        #: Top-level JSON keys beside the report's: `free` {plain, reuseaddr}, `holders`.
        self.data: dict[str, Any] = data if data is not None else {}
        #: What --kill did, one entry per process: {pid, action, signal, result, stop, argv}.
        self.actions: list[dict[str, Any]] = actions if actions is not None else []


def run(params: Params) -> PortResult:
    quick = params.check and params.quiet and params.wait is None and not params.kill
    if quick and params.is_port and not params.all_netns:
        # `--check -q` in a script: the trial bind is the whole answer, so nothing
        # else (owner walk, managers, findings) is imported or run.
        return _check_quietly(params)
    from sockprobe.port.compose import run_port

    return run_port(params)


def _check_quietly(params: Params) -> PortResult:
    import time

    from sockprobe.lab import Deadline, resolve_host
    from sockprobe.port import trial
    from sockprobe.report import Report

    t0 = time.monotonic()
    host = resolve_host(params.host)
    check = trial.check_address(params.parsed.address, host.is_v6)
    trials = trial.run_trials(
        params.port, params.protocols, check, host.address, Deadline(params.deadline), every=False
    )
    free = trial.free(trials)
    ok = free["reuseaddr" if params.reuseaddr else "plain"]
    report = Report("port", summary=f"port {params.port}: {'free' if ok else 'in use'}")
    report.duration_s = time.monotonic() - t0
    return PortResult(report, 0 if ok else 1, {"free": free, "holders": []})
