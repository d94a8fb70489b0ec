"""Options of `sockprobe backlog` (light: the CLI imports this to build its parser)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

DEFAULT_BACKLOGS = (0, 1, 8, 128)
#: Clients beyond the effective backlog by default: the queue admits one of them
#: (backlog + 1), the other seven are left waiting.
EXTRA = 8
#: The first SYN retransmission comes 1 s after connect() (the initial RTO, RFC 6298),
#: so counters read within this window count every dropped SYN exactly once.
FIRST_RETRANSMIT_S = 1.0
MAX_BACKLOG = 2**31 - 1  # listen(2) takes a C int
MAX_CONNECTS = 100_000
#: TCP_SYNCNT accepts 1..255 (tcp(7)); the give-up experiment waits 2^(N+1)-1 s or more.
MAX_SYNCNT = 6

SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.ip_local_port_range",
)


@dataclass(frozen=True)
class Params(ProbeParams):
    #: A line of text for the CLI to show during --retry-wait (stderr, terminal only).
    progress: Callable[[str], None] | None = option(None, "", cli=False)  # noqa: RUF009
    backlogs: tuple[int, ...] = option(
        DEFAULT_BACKLOGS, "listen() backlogs to try.", flag="--backlog", metavar="N", item=int
    )
    connects: int | None = option(
        None, "Connects per backlog (default: the effective backlog + 8).", metavar="N"
    )
    retry_wait: float = option(
        0.0,
        "After accepting, keep accepting this many seconds and watch the waiting clients "
        "retransmit their SYNs (0: off).",
        metavar="S",
    )
    settle: float = option(
        0.5, "Most seconds to wait for the handshakes before counting (< 1).", metavar="S"
    )
    overflow: bool = option(
        True,
        "Show what a SYN, a half-open request's final ACK and a SYN cookie's final ACK "
        "each meet at a full accept queue.",
        negatable=True,
    )
    cookies: bool = option(
        True,
        "Compare a connection made through a SYN cookie with a normal one (MSS, window "
        "scaling, SACK from TCP_INFO on both ends).",
        negatable=True,
    )
    defer: bool = option(
        True,
        "Show TCP_DEFER_ACCEPT holding a connection back until its first data.",
        negatable=True,
    )
    defer_wait: bool = option(
        False, "Also wait for a client that sends nothing under TCP_DEFER_ACCEPT (about 1 s)."
    )
    synack_retries: int = option(
        0,
        "Also hold one client's final ACK back from a listener with TCP_SYNCNT N and watch "
        "its SYN-ACK resends until the request is dropped (0: off; slow: 2^(N+1)-1 s).",
        metavar="N",
    )
    syncnt: int = option(
        0,
        "Also follow one client with TCP_SYNCNT N into a full accept queue until connect() "
        "gives up, and compare its SYN schedule with the kernel's rule (0: off; slow: "
        "2^(N+1)-1 s or more).",
        metavar="N",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.backlogs) > 0, "--backlog: give at least one backlog")
        for b in self.backlogs:
            require(
                isinstance(b, int) and 0 <= b <= MAX_BACKLOG,
                f"--backlog must be 0..{MAX_BACKLOG}, not {b}",
            )
        if self.connects is not None:
            require(
                1 <= self.connects <= MAX_CONNECTS,
                f"--connects must be 1..{MAX_CONNECTS}, not {self.connects}",
            )
        require(
            math.isfinite(self.retry_wait) and 0 <= self.retry_wait <= 600,
            f"--retry-wait must be 0..600 seconds, not {self.retry_wait}",
        )
        require(
            math.isfinite(self.settle) and 0.01 <= self.settle < FIRST_RETRANSMIT_S,
            f"--settle must be at least 0.01 and below {FIRST_RETRANSMIT_S:g} s (the first "
            f"SYN retransmission would be counted again), not {self.settle}",
        )
        worst = len(self.backlogs) * self.retry_wait
        require(
            worst < self.deadline,
            f"--retry-wait {self.retry_wait:g} s for {len(self.backlogs)} backlog(s) takes "
            f"{worst:g} s: raise --deadline (now {self.deadline:g} s)",
        )
        require(
            isinstance(self.syncnt, int) and 0 <= self.syncnt <= MAX_SYNCNT,
            f"--syncnt must be 0..{MAX_SYNCNT}, not {self.syncnt}",
        )
        require(
            isinstance(self.synack_retries, int) and 0 <= self.synack_retries <= MAX_SYNCNT,
            f"--synack-retries must be 0..{MAX_SYNCNT}, not {self.synack_retries}",
        )
        if self.synack_retries:
            need = float(2 ** (self.synack_retries + 1) - 1) + 1.0
            require(
                need < self.deadline,
                f"--synack-retries {self.synack_retries} waits at least {need:g} s: raise "
                f"--deadline (now {self.deadline:g} s)",
            )
        if self.syncnt:
            # The budget (2^(N+1)-1) x the 1 s initial RTO (kernel/synretry.py) is the
            # least it can take; the run checks the kernel's exact give-up time again.
            need = float(2 ** (self.syncnt + 1) - 1) + 1.0
            require(
                need < self.deadline,
                f"--syncnt {self.syncnt} waits at least {need:g} s: raise --deadline "
                f"(now {self.deadline:g} s)",
            )
