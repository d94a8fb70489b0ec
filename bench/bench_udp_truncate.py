"""`sockprobe udp-truncate` with its defaults: under 1.5 s (issue 5).

The one deliberate wait is the unconnected socket's 0.2 s for an ICMP error that never
comes; everything else is loopback delivery inside send(). The bare interpreter start is
measured in the same run, for scale.
"""

from __future__ import annotations

from common import PYTHON, SOCKPROBE, Result, interleaved_medians

GOAL_S = 1.5


def bench() -> list[Result]:
    m = interleaved_medians(
        {
            "python": [PYTHON, "-c", "import socket"],
            "udp-truncate": [SOCKPROBE, "udp-truncate"],
        },
        runs=5,
    )
    t = m["udp-truncate"]
    return [
        Result(
            "sockprobe udp-truncate (defaults)",
            t,
            "s",
            f"< {GOAL_S:g} s",
            t < GOAL_S,
            m["python"],
            "python -c 'import socket'",
        )
    ]
