"""`sockprobe all` end to end (issue: framing, kernel, all and diff)."""

from __future__ import annotations

from common import SOCKPROBE, Result, interleaved_medians


def bench() -> list[Result]:
    t = interleaved_medians({"all": [SOCKPROBE, "all", "--json"]}, runs=2)["all"]
    # Issue 16: under 6 s on 2 cores with dead-peer and ephemeral added (dead-peer's
    # waits overlap the other probes: it runs in a child).
    return [Result("sockprobe all", t, "s", "< 6 s on 2 cores", t < 6.0)]
