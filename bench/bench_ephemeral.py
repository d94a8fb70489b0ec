"""`sockprobe ephemeral`: under 5 s with the defaults (issue 16).

The floor is net.ipv4.tcp_tw_reuse_delay (1 s by default): the TIME_WAIT experiment must
wait that long before its last connect(). The exhaustion and parity experiments and the
host scan (one sock_diag dump plus the owner walk of /proc) run inside that second.
Both the wall time of the command and the probe's own duration_s are reported.
"""

from __future__ import annotations

from common import Result, probe_goal


def bench() -> list[Result]:
    return probe_goal("ephemeral", "sockprobe.probes.ephemeral", 5.0, runs=5)
