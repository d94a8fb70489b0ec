"""Parameters of `sockprobe partial-send` and the constants the CLI needs.

Light on purpose: the CLI imports this module to build the option parser, so it imports
only the standard library and sockprobe.options / sockprobe.probes / sockprobe.status.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

PLACEMENTS = ("listener", "accepted")
PLACEMENT_CHOICES = (*PLACEMENTS, "both")
MODES = ("nonblocking", "timeout", "sendall")
MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Params(ProbeParams):
    size: int = option(1024 * 1024, "Bytes offered to the sender in each mode.", metavar="BYTES")
    sndbuf: int = option(16384, "SO_SNDBUF to request on the sender.", metavar="BYTES")
    rcvbuf: int = option(16384, "SO_RCVBUF to request on the receiver.", metavar="BYTES")
    placement: str = option(
        "both",
        "Where SO_RCVBUF is set: listener (before listen()), accepted, or both.",
        choices=PLACEMENT_CHOICES,
    )
    modes: tuple[str, ...] = option(
        MODES,
        "nonblocking, timeout, sendall (default: all three).",
        flag="--mode",
        choices=MODES,
    )
    quiet_period: float = option(
        0.2,
        "Non-blocking mode: stop after this many seconds with nothing accepted.",
        metavar="SECONDS",
    )
    op_timeout: float = option(
        0.2, "Socket timeout for send() and sendall(), seconds.", metavar="SECONDS"
    )
    autotune: bool = option(
        True,
        "Also compare a bulk transfer with default buffers and with SO_RCVBUF set.",
        negatable=True,
    )
    autotune_bytes: int = option(
        16 * 1024 * 1024, "Autotuning: bytes each bulk transfer sends.", metavar="BYTES"
    )
    autotune_rcvbuf: int = option(
        65536, "Autotuning: the SO_RCVBUF set on the second transfer.", metavar="BYTES"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.size <= MAX_SIZE, f"--size must be 1..{MAX_SIZE} bytes, not {self.size}")
        for name, v in (
            ("--sndbuf", self.sndbuf),
            ("--rcvbuf", self.rcvbuf),
            ("--autotune-rcvbuf", self.autotune_rcvbuf),
        ):
            require(1 <= v <= 1 << 30, f"{name} must be 1..{1 << 30} bytes, not {v}")
        require(
            1 << 16 <= self.autotune_bytes <= 1 << 30,
            f"--autotune-bytes must be {1 << 16}..{1 << 30}, not {self.autotune_bytes}",
        )
        require(
            self.placement in PLACEMENT_CHOICES,
            f"--placement {self.placement!r}: choose from {', '.join(PLACEMENT_CHOICES)}",
        )
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in MODES, f"--mode {m!r}: choose from {', '.join(MODES)}")
        require(
            0.01 <= self.quiet_period <= 10.0,
            f"--quiet-period must be 0.01..10 seconds, not {self.quiet_period}",
        )
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )
