"""Helpers for `make bench`: every goal is a measurement taken in this run, and where a
goal is relative, its baseline (bare Python, ss, lsof) is measured in the same run,
interleaved with the measured command so that machine load hits both alike."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The venv's interpreter and console script by absolute path: `python3` on PATH may be
#: a slow shell shim, which would flatter every ratio.
PYTHON = str(Path(sys.executable).absolute())
SOCKPROBE = str(Path(sys.executable).absolute().parent / "sockprobe")


@dataclass
class Result:
    name: str
    measured: float
    unit: str
    goal: str
    ok: bool
    baseline: float | None = None
    baseline_name: str = ""

    def line(self) -> str:
        ratio = ""
        if self.baseline:
            ratio = (
                f"  = {self.measured / self.baseline:.2f}x {self.baseline_name} "
                f"({self.baseline:.4g} {self.unit})"
            )
        verdict = "ok  " if self.ok else "MISS"
        return f"{verdict} {self.name}: {self.measured:.4g} {self.unit}{ratio}  [goal: {self.goal}]"


def run_once(argv: Sequence[str], timeout: float = 120.0) -> float:
    """Wall time of one run of argv, output discarded; a failing command is an error."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return elapsed


def interleaved_medians(commands: dict[str, Sequence[str]], runs: int = 15) -> dict[str, float]:
    """Run each command `runs` times, interleaved (a, b, c, a, b, c, ...); medians in s."""
    times: dict[str, list[float]] = {k: [] for k in commands}
    for argv in commands.values():  # one warm-up each (page cache, pyc files)
        run_once(argv)
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(run_once(argv))
    return {k: statistics.median(v) for k, v in times.items()}


def probe_goal(name: str, module: str, goal_s: float, runs: int = 3) -> list[Result]:
    """A probe's own duration_s (in-process, median of 3) and the command's wall time
    (process start included), each against `goal_s` seconds."""
    import json

    code = (
        f"import json; from {module} import Params, run; print(json.dumps(run(Params()).to_dict()))"
    )
    inside = []
    for _ in range(3):
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
        inside.append(float(json.loads(out.stdout)["duration_s"]))
    probe = statistics.median(inside)
    wall = interleaved_medians({name: [SOCKPROBE, name]}, runs=runs)[name]
    return [
        Result(
            f"{name} probe duration_s (in-process)", probe, "s", f"< {goal_s:g} s", probe < goal_s
        ),
        Result(
            f"sockprobe {name} (defaults, process start included)",
            wall,
            "s",
            f"< {goal_s:g} s",
            wall < goal_s,
        ),
    ]
