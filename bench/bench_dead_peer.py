"""`sockprobe dead-peer`: every case at once in under 5 s with the defaults (issue 16).

The probe's floor is its own bound: the keepalive case must be allowed to end at
idle + intvl x cnt (3 s by default) plus the slack that shows a late abort, and the
cases no timer ends are woken at that bound (4.5 s). Everything else runs inside it,
so the goal is met only if the nine cases really run concurrently. Both the wall time of
the command (process start included) and the probe's own duration_s are reported.
"""

from __future__ import annotations

from common import Result, probe_goal


def bench() -> list[Result]:
    return probe_goal("dead-peer", "sockprobe.probes.dead_peer", 5.0, runs=3)
