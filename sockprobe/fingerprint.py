"""`sockprobe all`: every registered probe with its defaults, and one summary.

The JSON form is the host's socket-behaviour fingerprint: platform, kernel, the settings
every probe read, and every probe's full report. `sockprobe diff` compares two of them.
A probe that cannot run is recorded with its exit status and message; the others still run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe.probes import PROBES, load
from sockprobe.report import SCHEMA_VERSION, VOLATILE, Report, col, environment, report_from_dict
from sockprobe.status import ExitStatus, classify

FINGERPRINT_KIND = "sockprobe-fingerprint"

#: Called before each probe with (index from 1, total, probe name).
Progress = Callable[[int, int, str], None]


@dataclass
class Outcome:
    name: str
    report: Report | None
    status: ExitStatus
    error: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The probe's report, or its failure: what `all --format jsonl` streams."""
        if self.report is not None:
            return self.report.to_dict()
        return {
            "schema": SCHEMA_VERSION,
            "probe": self.name,
            "error": self.error,
            "status": int(self.status),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class Fingerprint:
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.report is None]

    @property
    def reports(self) -> list[Report]:
        return [o.report for o in self.outcomes if o.report is not None]

    def summary_report(self) -> Report:
        """A Report whose one table is the summary: probe, status, headline, duration."""
        rep = Report("all", params={})
        t = rep.table(
            "summary",
            "Every probe with its defaults (its tables: sockprobe PROBE; all: --full)",
            [
                col("probe"),
                # "ok", or the exit status the probe alone would have ended with.
                col("status"),
                col("duration_s", "s", kind=VOLATILE),
                col("answer", kind=VOLATILE),
            ],
        )
        for o in self.outcomes:
            if o.report is not None:
                t.add(o.name, "ok", round(o.duration_s, 2), o.report.summary)
            else:
                t.add(o.name, f"exit {int(o.status)}", round(o.duration_s, 2), o.error)
        ran = len(self.outcomes) - len(self.failed)
        rep.summary = f"{ran} of {len(self.outcomes)} probes ran in {self.duration_s:.1f} s"
        # One finding per cause: an exhausted port range stops every probe alike.
        by_error: dict[str, list[str]] = {}
        for o in self.failed:
            by_error.setdefault(o.error, []).append(o.name)
        rep.findings = [
            f"{', '.join(names)} could not run: {error}" for error, names in by_error.items()
        ]

        rep.environment = environment()
        rep.duration_s = self.duration_s
        return rep

    def to_dict(self) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for r in self.reports:
            settings.update(r.environment.get("sysctls", {}))
        return {
            "schema": SCHEMA_VERSION,
            "kind": FINGERPRINT_KIND,
            "platform": sys.platform,
            "system": platform.system(),
            "kernel_release": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "settings": dict(sorted(settings.items())),
            "probes": {
                o.name: (
                    o.report.to_dict()
                    if o.report is not None
                    else {"error": o.error, "status": int(o.status)}
                )
                for o in self.outcomes
            },
            "duration_s": round(self.duration_s, 3),
        }


def run_all(
    host: str = "127.0.0.1",
    deadline: float = 30.0,
    only: list[str] | None = None,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Fingerprint:
    """Run each registered probe (or those named in `only`) with its defaults.

    `deadline` bounds each probe. A probe whose spec says `background` (it waits on
    kernel timers for seconds and uses no CPU: dead-peer) runs in a child process
    started first, so its waits overlap the other probes; its JSON report is read back
    at the end, and the child is killed on any exit, Ctrl-C included.
    KeyboardInterrupt is not caught: the probe that was running has cleaned up by the
    time it propagates, and the CLI exits 130.
    """
    specs = [p for p in PROBES if only is None or p.name in only]
    fp = Fingerprint()
    t0 = time.monotonic()
    children: dict[str, tuple[subprocess.Popen[str], float]] = {}
    done: dict[str, Outcome] = {}
    try:
        for spec in specs:
            if spec.background and len(specs) > 1:
                children[spec.name] = (_start_child(spec.name, host, deadline), time.monotonic())
        # The probes that run here go first; the children's reports are collected after
        # them (their waits overlapped), and the outcomes keep the registry's order.
        order = [s for s in specs if s.name not in children] + [
            s for s in specs if s.name in children
        ]
        for i, spec in enumerate(order, 1):
            if progress is not None:
                progress(i, len(specs), spec.name)
            if spec.name in children:
                proc, started = children.pop(spec.name)
                outcome = _collect_child(spec.name, proc, started, deadline)
            else:
                outcome = _run_here(spec.name, host, deadline)
            done[spec.name] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        for proc, _ in children.values():
            _reap(proc)
    fp.outcomes = [done[s.name] for s in specs if s.name in done]
    fp.duration_s = time.monotonic() - t0
    return fp


def _run_here(name: str, host: str, deadline: float) -> Outcome:
    start = time.monotonic()
    try:
        module = load(name)
        report = module.run(module.Params(host=host, deadline=deadline))
        return Outcome(name, report, ExitStatus.OK, duration_s=time.monotonic() - start)
    except Exception as exc:  # one probe's failure is its row; the others still run
        status, message = classify(exc)
        return Outcome(name, None, status, message, time.monotonic() - start)


def _start_child(name: str, host: str, deadline: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockprobe",
            name,
            "--json",
            "--host",
            host,
            "--deadline",
            repr(deadline),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect_child(
    name: str, proc: subprocess.Popen[str], started: float, deadline: float
) -> Outcome:
    """The child's report, or its failure; it is killed if it outlives its deadline
    (it bounds itself; the margin covers interpreter start-up)."""
    try:
        out, err = proc.communicate(timeout=max(0.0, started + deadline + 5.0 - time.monotonic()))
    except subprocess.TimeoutExpired:
        _reap(proc)
        return Outcome(
            name,
            None,
            ExitStatus.DEADLINE,
            f"--deadline {deadline:g} s ran out",
            time.monotonic() - started,
        )
    took = time.monotonic() - started
    if proc.returncode == 0:
        try:
            report = report_from_dict(json.loads(out))
            # The probe's own time, not the time it waited to be collected.
            return Outcome(name, report, ExitStatus.OK, duration_s=report.duration_s)
        except (ValueError, KeyError, TypeError) as exc:
            return Outcome(name, None, ExitStatus.FAILURE, f"unreadable report: {exc}", took)
    message = (err.strip().splitlines() or ["no message"])[-1].removeprefix("sockprobe: ")
    try:
        status = ExitStatus(proc.returncode)
    except ValueError:
        status = ExitStatus.FAILURE
    return Outcome(name, None, status, message, took)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass
