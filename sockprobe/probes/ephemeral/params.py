"""Options of `sockprobe ephemeral` (light: the CLI imports this to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

MAX_PORTS = 64
MAX_SAMPLES = 256


@dataclass(frozen=True)
class Params(ProbeParams):
    ports: int = option(
        4, "Ports in each experiment's private range (IP_LOCAL_PORT_RANGE).", metavar="N"
    )
    samples: int = option(16, "Sockets per allocator in the parity measurement.", metavar="N")
    top: int = option(5, "Destinations and processes listed for this host.", metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.ports, int) and 1 <= self.ports <= MAX_PORTS,
            f"--ports must be 1..{MAX_PORTS}, not {self.ports}",
        )
        require(
            isinstance(self.samples, int) and 2 <= self.samples <= MAX_SAMPLES,
            f"--samples must be 2..{MAX_SAMPLES}, not {self.samples}",
        )
        require(
            isinstance(self.top, int) and 1 <= self.top <= 100,
            f"--top must be 1..100, not {self.top}",
        )
