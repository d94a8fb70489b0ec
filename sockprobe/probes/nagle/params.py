"""Parameters of `sockprobe nagle` and the constants the CLI needs to build its parser.

Light on purpose: the CLI imports this module to build the option parser, so it imports
only the standard library and sockprobe.options / sockprobe.probes / sockprobe.status.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

#: Ways of writing small data: the kernel's default (Nagle), TCP_NODELAY, TCP_CORK.
MODES = ("nagle", "nodelay", "cork")
#: cork-held never uncorks: it shows when the kernel sends a corked tail by itself.
ALL_MODES = (*MODES, "cork-held")
#: Fixes for write-write-read, each on a Nagle (default) client unless it says otherwise:
#: - one-send: the two pieces joined into one buffer, one send();
#: - sendmsg: one sendmsg() with the two pieces as two buffers;
#: - msg-more: send(first, MSG_MORE), then send(second);
#: - quickack-once: the server sets TCP_QUICKACK once, after accept();
#: - quickack-rearmed: the server sets TCP_QUICKACK again after every recv().
FIXES = ("one-send", "sendmsg", "msg-more", "quickack-once", "quickack-rearmed")
READERS = ("idle", "concurrent", "both")
TCP_CORK = getattr(socket, "TCP_CORK", None)
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
MSG_MORE = getattr(socket, "MSG_MORE", None)


@dataclass(frozen=True)
class Params(ProbeParams):
    writes: int = option(100, "Back-to-back writes per mode.", metavar="N")
    size: int = option(10, "Bytes per write (and per request piece).", metavar="BYTES")
    rounds: int = option(20, "Write-write-read rounds per mode and per fix.", metavar="N")
    modes: tuple[str, ...] = option(
        MODES,
        "Modes: nagle, nodelay, cork, cork-held (default: the first three).",
        flag="--mode",
        metavar="MODE",
        choices=ALL_MODES,
    )
    fixes: tuple[str, ...] = option(
        FIXES,
        "Write-write-read fixes to measure (default: all; `none` for none).",
        flag="--fix",
        metavar="FIX",
        choices=(*FIXES, "none"),
    )
    reader: str = option(
        "both", "Receiver during coalescing: idle, concurrent or both.", choices=READERS
    )
    quickack_probes: int = option(
        24,
        "Quick-ACK start: one-byte segments sent to a silent receiver, one at a time.",
        metavar="N",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.writes <= 100_000, f"--writes must be 1..100000, not {self.writes}")
        require(1 <= self.size <= 65_536, f"--size must be 1..65536 bytes, not {self.size}")
        require(1 <= self.rounds <= 10_000, f"--rounds must be 1..10000, not {self.rounds}")
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in ALL_MODES, f"--mode {m!r}: choose from {', '.join(ALL_MODES)}")
        for f in self.fixes:
            require(f in (*FIXES, "none"), f"--fix {f!r}: choose from {', '.join(FIXES)}, none")
        require(
            self.reader in READERS, f"--reader {self.reader!r}: choose from {', '.join(READERS)}"
        )
        require(
            0 <= self.quickack_probes <= 200,
            f"--quickack-probes must be 0..200, not {self.quickack_probes}",
        )

    @property
    def fix_list(self) -> list[str]:
        return [f for f in FIXES if f in self.fixes]
