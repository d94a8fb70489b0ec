"""Options of `sockprobe dead-peer` (light: the CLI imports this to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

#: tcp(7): TCP_KEEPIDLE and TCP_KEEPINTVL take 1..32767 s (MAX_TCP_KEEPIDLE,
#: MAX_TCP_KEEPINTVL), TCP_KEEPCNT 1..127 (MAX_TCP_KEEPCNT).
MAX_KEEP_S = 32767
MAX_KEEPCNT = 127
#: How long the probe keeps waiting past the latest time the settings predict, for the
#: cases the kernel never ends: long enough to see a predicted abort arrive late on a
#: loaded machine, short enough that the whole probe stays within a few seconds.
SLACK_S = 1.5


@dataclass(frozen=True)
class Params(ProbeParams):
    keepalive: tuple[int, ...] = option(
        (1, 1, 2),
        "SO_KEEPALIVE settings for the keepalive cases: TCP_KEEPIDLE, TCP_KEEPINTVL "
        "(seconds) and TCP_KEEPCNT.",
        metavar="IDLE,INTVL,CNT",
        item=int,
    )
    user_timeout: int = option(
        1500, "TCP_USER_TIMEOUT for the user-timeout cases, in ms.", metavar="MS"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.keepalive) == 3,
            "--keepalive takes IDLE,INTVL,CNT (three numbers), not "
            + ",".join(str(v) for v in self.keepalive),
        )
        idle, intvl, cnt = self.keepalive
        require(
            1 <= idle <= MAX_KEEP_S and 1 <= intvl <= MAX_KEEP_S and 1 <= cnt <= MAX_KEEPCNT,
            f"--keepalive: IDLE and INTVL must be 1..{MAX_KEEP_S} s and CNT 1..{MAX_KEEPCNT}, "
            f"not {idle},{intvl},{cnt}",
        )
        require(
            1 <= self.user_timeout <= 600_000,
            f"--user-timeout must be 1..600000 ms, not {self.user_timeout}",
        )

    @property
    def keepalive_s(self) -> float:
        """When the keepalive cases should end: idle + intvl x cnt."""
        idle, intvl, cnt = self.keepalive
        return float(idle + intvl * cnt)

    @property
    def bound_s(self) -> float:
        """How long a case may wait before the probe wakes it: past every prediction."""
        return max(self.keepalive_s, self.user_timeout / 1000) + SLACK_S
