"""`sockprobe reuseaddr`: the whole matrix in under 2 s (issue 6).

The probe's floor is net.ipv4.tcp_tw_reuse_delay (1 s by default): the tcp_tw_reuse row
must wait that long before its second connect(), and the crossed-FIN case waits one RTO.
Everything else runs inside that second, so the goal is met only if the 15 restart
scenarios, the wildcard, IPV6_V6ONLY, timers and TIME_WAIT rows, the SO_REUSEPORT restart
and the other-user child together stay under it. Both the wall time of the command
(process start included) and the probe's own duration_s are reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess

from common import SOCKPROBE, Result, interleaved_medians


def bench() -> list[Result]:
    wall = interleaved_medians({"reuseaddr": [SOCKPROBE, "reuseaddr"]}, runs=5)["reuseaddr"]
    inside = []
    for _ in range(3):
        out = subprocess.run(
            [SOCKPROBE, "reuseaddr", "--json"], capture_output=True, text=True, timeout=60
        )
        inside.append(float(json.loads(out.stdout)["duration_s"]))
    probe = statistics.median(inside)
    return [
        Result(
            "sockprobe reuseaddr (defaults, whole matrix, process start included)",
            wall,
            "s",
            "< 2 s",
            wall < 2.0,
        ),
        Result("reuseaddr probe duration_s (in-process)", probe, "s", "< 2 s", probe < 2.0),
    ]
