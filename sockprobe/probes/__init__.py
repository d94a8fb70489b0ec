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
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from sockprobe.options import option
from sockprobe.status import UsageError

if TYPE_CHECKING:  # lab (sockets, threads, subprocess) is imported when a probe runs
    from sockprobe.lab import Deadline, Host


class ProbeSpec(NamedTuple):
    name: str
    module: str
    question: str
    #: One or two command lines shown at the end of the command's --help.
    examples: tuple[str, ...] = ()
    #: The probe spends its time waiting on kernel timers, not on the CPU: `all` runs it
    #: in a child process beside the others (see fingerprint.run_all).
    background: bool = False


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
        background=True,
    ),
    ProbeSpec(
        "framing",
        "sockprobe.probes.framing",
        "How do message boundaries survive TCP, UDP, SEQPACKET, and a length-prefixed protocol?",
    ),
    ProbeSpec(
        "dead-peer",
        "sockprobe.probes.dead_peer",
        "What notices a peer that vanished without a word (keepalive, TCP_USER_TIMEOUT, "
        "retries), and when?",
        ("sockprobe dead-peer", "sockprobe dead-peer --keepalive 2,1,3 --user-timeout 800"),
        background=True,
    ),
    ProbeSpec(
        "ephemeral",
        "sockprobe.probes.ephemeral",
        "When does connect() run out of local ports (EADDRNOTAVAIL), and how close is this host?",
        ("sockprobe ephemeral", "sockprobe ephemeral --ports 8 --top 10"),
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


#: --deadline bounds: below 10 ms no probe can do anything; above a day a timeout
#: overflows what socket.settimeout() and select() accept on some platforms.
DEADLINE_MIN = 0.01
DEADLINE_MAX = 86_400.0


@dataclass(frozen=True)
class ProbeParams:
    """Options every probe shares. Subclasses add their own, all with defaults."""

    host: str = option("127.0.0.1", "Local address to run on; ::1 selects IPv6.", metavar="ADDRESS")
    deadline: float = option(30.0, "Hard bound on the whole probe.", metavar="SECONDS")

    def __post_init__(self) -> None:
        if not (
            isinstance(self.deadline, (int, float))
            and math.isfinite(self.deadline)
            and DEADLINE_MIN <= self.deadline <= DEADLINE_MAX
        ):
            raise UsageError(
                f"--deadline must be {DEADLINE_MIN:g} to {DEADLINE_MAX:g} seconds, "
                f"not {self.deadline:g}"
            )

    #: Whether the probe binds ephemeral ports (all but `kernel --no-measure` do).
    needs_ports: ClassVar[bool] = True

    def check_host(self) -> Host:
        """The host, validated: exit 2 for one that is not a local unicast address."""
        from sockprobe.lab import require_local, resolve_host

        host = resolve_host(self.host)
        require_local(host, needs_ports=False)
        return host

    def resolve(self) -> tuple[Host, Deadline]:
        """The lab host and the deadline, which starts counting now. Exit 3 when the
        ephemeral port range is exhausted and the probe needs a port."""
        from sockprobe.lab import Deadline, require_local, resolve_host

        host = resolve_host(self.host)
        require_local(host, needs_ports=self.needs_ports)
        return host, Deadline(self.deadline)


def plural(n: int, word: str, many: str | None = None) -> str:
    """plural(1, "connect") -> "1 connect"; plural(3, "connect") -> "3 connects";
    plural(1, "SYN was", "SYNs were") -> "1 SYN was"."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many}" if many is not None else f"{n} {word}s"


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
