"""`sockprobe framing` and `sockprobe kernel` with their defaults: each well under 1 s
(issue 9).

Both are measured end to end (interpreter and typer start-up included), interleaved with
a bare interpreter start so that machine load hits all alike; the probes' own run time,
from the report's duration_s, is shown too. framing's default run is 20 cases of a few
kilobytes over loopback (its recv(2) reader makes about 5,000 system calls per stream
transport); kernel reads 26 files and opens a handful of sockets.
"""

from __future__ import annotations

import json
import statistics
import subprocess

from common import PYTHON, SOCKPROBE, Result, interleaved_medians

GOAL_S = 1.0


def _probe_seconds(command: str, runs: int = 5) -> float:
    """Median duration_s the probe reports for itself (no interpreter start-up)."""
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [SOCKPROBE, command, "--json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        times.append(float(json.loads(out)["duration_s"]))
    return statistics.median(times)


def bench() -> list[Result]:
    m = interleaved_medians(
        {
            "python": [PYTHON, "-c", "import socket"],
            "framing": [SOCKPROBE, "framing"],
            "kernel": [SOCKPROBE, "kernel"],
        },
        runs=7,
    )
    out = []
    for name in ("framing", "kernel"):
        out.append(
            Result(
                f"sockprobe {name} (defaults, end to end)",
                m[name],
                "s",
                f"< {GOAL_S:g} s",
                m[name] < GOAL_S,
                m["python"],
                "python -c 'import socket'",
            )
        )
        own = _probe_seconds(name)
        out.append(
            Result(
                f"sockprobe {name}: the probe itself (duration_s)", own, "s", "< 0.5 s", own < 0.5
            )
        )
    return out
