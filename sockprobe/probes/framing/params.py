"""framing's parameters and the constants its experiments share (light: the CLI imports
this module to build the parser)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

TRANSPORTS = ("tcp", "tcp-nodelay", "udp", "unix-stream", "unix-seqpacket")
STREAMS = frozenset({"tcp", "tcp-nodelay", "unix-stream"})
READERS = ("recv", "small-recv", "prefix", "readline")
RECEIVERS = ("late", "concurrent")
#: Sizes of the messages that follow b"hello" and b"world" by default: three fit a
#: 4096-byte read, the last does not, and together they span more than two such reads.
DEFAULT_SIZES = (100, 1000, 3000, 6000)
HEADER = struct.Struct("!I")  # network byte order, unsigned 32-bit: the same on every host
#: The largest UDP payload over IPv4 is 65,507 bytes; the prefix reader adds a 4-byte header.
MAX_SIZE = 65_507 - HEADER.size
MAX_MESSAGES = 200
#: UDP_SEGMENT refuses more than UDP_MAX_SEGMENTS segments per send (include/linux/udp.h:
#: 64 on older kernels, 128 on recent ones); stay within the smaller.
OFFLOAD_MAX_SEGMENTS = 64

TRANSPORT_LABEL = {
    "tcp": "TCP",
    "tcp-nodelay": "TCP_NODELAY",
    "udp": "UDP",
    "unix-stream": "UNIX stream",
    "unix-seqpacket": "UNIX seqpacket",
}


@dataclass(frozen=True)
class Params(ProbeParams):
    sizes: tuple[int, ...] = option(
        DEFAULT_SIZES,
        "Size of a message sent after 'hello' and 'world'.",
        flag="--size",
        metavar="N",
    )
    read_size: int = option(4096, "Buffer of the one-recv-per-message reader.", metavar="N")
    small_read: int = option(2, "Buffer of the tiny-reads reader.", metavar="N")
    transports: tuple[str, ...] = option(
        TRANSPORTS, "Transports to try.", flag="--transport", choices=TRANSPORTS
    )
    readers: tuple[str, ...] = option(
        READERS, "Readers to try on each transport.", flag="--reader", choices=READERS
    )
    receiver: str = option(
        "late",
        "late: read after the sender's last send(); concurrent: while it writes.",
        choices=RECEIVERS,
    )
    offload_segments: int = option(
        4,
        "offload: datagrams per UDP_SEGMENT send, and sends per corked datagram.",
        metavar="N",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.sizes) + 2 <= MAX_MESSAGES,
            f"--size: at most {MAX_MESSAGES - 2} messages after 'hello' and 'world'",
        )
        for n in self.sizes:
            require(1 <= n <= MAX_SIZE, f"--size must be 1..{MAX_SIZE} bytes, not {n}")
        require(
            1 <= self.read_size <= 1 << 20, f"--read-size must be 1..1048576, not {self.read_size}"
        )
        require(
            1 <= self.small_read <= 1 << 20,
            f"--small-read must be 1..1048576, not {self.small_read}",
        )
        require(len(self.transports) > 0, "--transport: give at least one transport")
        for t in self.transports:
            require(t in TRANSPORTS, f"--transport {t!r}: choose from {', '.join(TRANSPORTS)}")
        require(len(self.readers) > 0, "--reader: give at least one reader")
        for r in self.readers:
            require(r in READERS, f"--reader {r!r}: choose from {', '.join(READERS)}")
        require(
            2 <= self.offload_segments <= OFFLOAD_MAX_SEGMENTS,
            f"--offload-segments must be 2..{OFFLOAD_MAX_SEGMENTS}, not {self.offload_segments}",
        )
        require(
            self.receiver in RECEIVERS,
            f"--receiver {self.receiver!r}: choose from {', '.join(RECEIVERS)}",
        )


def reader_label(reader: str, p: Params) -> str:
    return {
        "recv": f"recv({p.read_size})",
        "small-recv": f"recv({p.small_read})",
        "prefix": "'!I' length prefix",
        "readline": "makefile().readline()",
    }[reader]
