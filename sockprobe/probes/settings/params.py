"""Options of `sockprobe kernel` (imported by the CLI to build its parser: keep it light)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require


@dataclass(frozen=True)
class Params(ProbeParams):
    measure: bool = option(
        True,
        "Measure what a new socket gets and the close timers (--no-measure: read the "
        "settings only).",
        negatable=True,
    )
    follow: bool = option(
        False,
        "Watch the orphaned FIN_WAIT2 socket until the kernel frees it, to measure its "
        "whole lifetime (as long as the kernel keeps it: 60 s with the defaults; raise "
        "--deadline to match).",
        flag="--follow-fin-wait2",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.measure or not self.follow,
            "--follow-fin-wait2 measures a timer: it does not go with --no-measure",
        )
