"""`sockprobe partial-send` with its defaults: under 1.5 s (issue 5).

Its floor is set by timers, not CPU: the 0.2 s quiet period, the 0.2 s operation timeout
and the receiver's delayed ACK, with the six scenarios running side by side; the two
16 MiB autotuning transfers add about 20 ms. The bare interpreter start is measured in
the same run, for scale.
"""

from __future__ import annotations

from common import PYTHON, SOCKPROBE, Result, interleaved_medians

GOAL_S = 1.5


def bench() -> list[Result]:
    m = interleaved_medians(
        {
            "python": [PYTHON, "-c", "import socket"],
            "partial-send": [SOCKPROBE, "partial-send"],
        },
        runs=5,
    )
    t = m["partial-send"]
    return [
        Result(
            "sockprobe partial-send (defaults)",
            t,
            "s",
            f"< {GOAL_S:g} s",
            t < GOAL_S,
            m["python"],
            "python -c 'import socket'",
        )
    ]
