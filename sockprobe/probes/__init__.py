"""The probes: one module each, exposing `Params` (a dataclass) and `run(params) -> Report`.

`PROBES` is the registry `sockprobe all` walks, in order. Modules are imported on demand
so that `sockprobe --help` does not pay for them.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

from sockprobe.lab import Deadline, Host, require_local, resolve_host
from sockprobe.status import UsageError


class ProbeSpec(NamedTuple):
    name: str
    module: str
    question: str


PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec(
        "nagle",
        "sockprobe.probes.nagle",
        "How many segments do small writes become? What does write-write-read cost?",
    ),
    ProbeSpec(
        "partial-send",
        "sockprobe.probes.partial_send",
        "How much does one send() accept when buffers fill? Is anything lost?",
    ),
    ProbeSpec(
        "udp-truncate",
        "sockprobe.probes.udp_truncate",
        "What happens to a datagram larger than the buffer, the largest one, a full queue?",
    ),
    ProbeSpec(
        "reuseaddr",
        "sockprobe.probes.reuseaddr",
        "When does a restarted server get EADDRINUSE, and which socket options fix it?",
    ),
    ProbeSpec(
        "backlog",
        "sockprobe.probes.backlog",
        "How many connections does listen(n) really admit, and where do the others wait?",
    ),
    ProbeSpec(
        "timeouts",
        "sockprobe.probes.timeouts",
        "Which exception and errno does each operation give per mode, and after how long?",
    ),
    ProbeSpec(
        "close",
        "sockprobe.probes.close",
        "What does the peer see after close, close with unread data, abort, half-close?",
    ),
    ProbeSpec(
        "framing",
        "sockprobe.probes.framing",
        "How do message boundaries survive TCP, UDP, SEQPACKET, and a length-prefixed protocol?",
    ),
    ProbeSpec(
        "kernel",
        "sockprobe.probes.settings",
        "Which kernel settings shape these behaviours here, and what does each change?",
    ),
    # ---- registry entries above this line ----
)


def spec(name: str) -> ProbeSpec:
    for p in PROBES:
        if p.name == name:
            return p
    raise KeyError(name)


def load(name: str) -> ModuleType:
    return importlib.import_module(spec(name).module)


@dataclass(frozen=True)
class ProbeParams:
    """Options every probe shares. Subclasses add their own, all with defaults."""

    host: str = "127.0.0.1"
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if not (
            isinstance(self.deadline, (int, float))
            and math.isfinite(self.deadline)
            and self.deadline > 0
        ):
            raise UsageError(
                f"--deadline must be a positive number of seconds, not {self.deadline}"
            )

    def resolve(self) -> tuple[Host, Deadline]:
        """The lab host and the deadline, which starts counting now."""
        host = resolve_host(self.host)
        require_local(host)
        return host, Deadline(self.deadline)


def plural(n: int, word: str) -> str:
    """plural(1, "connect") -> "1 connect"; plural(3, "connect") -> "3 connects"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def require(condition: bool, message: str) -> None:
    """Raise UsageError(message) unless condition holds."""
    if not condition:
        raise UsageError(message)


class Stopwatch:
    """Wall time of a probe, for Report.duration_s."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0
