"""reuseaddr's options (the CLI imports this module to build its parser: keep it light)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sockprobe.options import OPTION_KEY, OptionSpec, option
from sockprobe.probes import ProbeParams, require

#: A progress line for the CLI to show while `--wait` waits a TIME_WAIT out.
Progress = Callable[[str], None]
MAX_CLIENTS = 64


@dataclass(frozen=True)
class Params(ProbeParams):
    wait: bool = option(
        False,
        "Then wait a server-side TIME_WAIT out (about 60 s; the deadline becomes 120 s "
        "unless given) and bind the port with no option.",
    )
    #: None: 30 s, or 120 s with --wait (a TIME_WAIT lasts 60 s, TCP_TIMEWAIT_LEN).
    deadline: float = option(
        None, "Hard bound on the whole probe (default: 30; 120 with --wait).", metavar="SECONDS"
    )
    wildcard_listen: bool = option(
        False,
        "Let the [::] socket of the IPV6_V6ONLY rows listen (reachable from other hosts for "
        "milliseconds); by default it is only bound.",
    )
    clients: int = option(
        4, "SO_REUSEPORT restart: clients queued on each of the two listeners.", metavar="N"
    )
    #: Called with a line of text while waiting; not a measurement setting, so it stays
    #: out of the report's params.
    progress: Progress | None = field(
        default=None,
        compare=False,
        repr=False,
        metadata={OPTION_KEY: OptionSpec(help="progress callback", cli=False)},
    )

    def __post_init__(self) -> None:
        if self.deadline is None:
            object.__setattr__(self, "deadline", 120.0 if self.wait else 30.0)
        super().__post_init__()
        require(
            isinstance(self.clients, int) and 1 <= self.clients <= MAX_CLIENTS,
            f"--clients must be 1..{MAX_CLIENTS}, not {self.clients}",
        )
