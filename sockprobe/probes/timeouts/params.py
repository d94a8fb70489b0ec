"""Options of `sockprobe timeouts` (light: the CLI imports this to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

#: Operation id -> (label, the calls tried).
OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "connect-refused": ("connect to a closed port", ("connect", "connect_ex")),
    "connect-full-queue": (
        "connect to a full accept queue (SYN dropped)",
        ("connect", "connect_ex"),
    ),
    "accept": ("accept, nothing pending", ("accept",)),
    "recv": ("recv, no data", ("recv",)),
    "send-full": ("send into full buffers", ("send",)),
    "recv-after-fin": ("recv after the peer's FIN", ("recv",)),
    "recv-after-rst": ("recv after the peer's RST", ("recv",)),
    "send-after-close": ("send after the peer closed (1st send)", ("send",)),
    "send-after-rst": ("send after the peer closed (2nd send, RST back)", ("send",)),
}
MODES: dict[str, str] = {
    "blocking": "blocking",
    "timeout": "settimeout(T)",
    "nonblocking": "setblocking(False)",
    "sockopt": "SO_RCVTIMEO/SO_SNDTIMEO",
}
SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_abort_on_overflow",
)


@dataclass(frozen=True)
class Params(ProbeParams):
    op_timeout: float = option(0.2, "T for settimeout(T) and SO_RCVTIMEO/SO_SNDTIMEO.", metavar="S")
    wake_after: float = option(
        0.3, "Wake a blocked call with shutdown() after this long.", metavar="S"
    )
    ops: tuple[str, ...] = option(
        tuple(OPS), "Operations to run.", flag="--op", choices=tuple(OPS), metavar="OP"
    )
    modes: tuple[str, ...] = option(
        tuple(MODES), "Modes to run.", flag="--mode", choices=tuple(MODES), metavar="MODE"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )
        require(
            0.05 <= self.wake_after <= 10.0,
            f"--wake-after must be 0.05..10 seconds, not {self.wake_after}",
        )
        require(len(self.ops) > 0, "--op: give at least one operation")
        for op in self.ops:
            require(op in OPS, f"--op {op!r}: choose from {', '.join(OPS)}")
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in MODES, f"--mode {m!r}: choose from {', '.join(MODES)}")
