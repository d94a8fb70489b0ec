"""`sockprobe all` end to end (issue: framing, kernel, all and diff)."""

from __future__ import annotations

from common import SOCKPROBE, Result, interleaved_medians


def bench() -> list[Result]:
    t = interleaved_medians({"all": [SOCKPROBE, "all", "--json"]}, runs=2)["all"]
    return [Result("sockprobe all", t, "s", "< 10 s on 2 cores", t < 10.0)]
