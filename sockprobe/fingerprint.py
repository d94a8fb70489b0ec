"""`sockprobe all`: every registered probe with its defaults, and one summary.

The JSON form is the host's socket-behaviour fingerprint: platform, kernel, the settings
every probe read, and every probe's full report. `sockprobe diff` compares two of them.
A probe that cannot run is recorded with its exit status and message; the others still run.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe.probes import PROBES, load
from sockprobe.report import SCHEMA_VERSION, VOLATILE, Report, col, environment
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
            "Every probe with its defaults (one probe's tables: sockprobe PROBE; all of "
            "them: sockprobe all --full; the fingerprint: --json)",
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
        rep.findings = [f"{o.name} could not run: {o.error}" for o in self.failed]

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

    `deadline` bounds each probe. KeyboardInterrupt is not caught: the probe that was
    running has cleaned up by the time it propagates, and the CLI exits 130.
    """
    specs = [p for p in PROBES if only is None or p.name in only]
    fp = Fingerprint()
    t0 = time.monotonic()
    for i, spec in enumerate(specs, 1):
        if progress is not None:
            progress(i, len(specs), spec.name)
        start = time.monotonic()
        try:
            module = load(spec.name)
            report = module.run(module.Params(host=host, deadline=deadline))
            fp.outcomes.append(
                Outcome(spec.name, report, ExitStatus.OK, duration_s=time.monotonic() - start)
            )
        except Exception as exc:  # one probe's failure is its row; the others still run
            status, message = classify(exc)
            fp.outcomes.append(Outcome(spec.name, None, status, message, time.monotonic() - start))
        if on_outcome is not None:
            on_outcome(fp.outcomes[-1])
    fp.duration_s = time.monotonic() - t0
    return fp
