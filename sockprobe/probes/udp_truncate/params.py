"""udp-truncate's parameters and the constants its experiments share (light: the CLI
imports this module to build the parser)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require

DEFAULT_SIZES = (64, 512, 1024, 1472, 1500, 8192, 65507)
#: Sizes the sweep accepts; beyond the family's limit send() raises EMSGSIZE and the row
#: says so, which is itself a result.
MAX_SIZE = 65535
#: Overflow cases: SO_RCVBUF requested on the idle receiver, one case each.
DEFAULT_RCVBUFS = (4096, 32768)
#: The path MTU the private namespace's `lo` gets for the fragmentation experiment.
DEFAULT_MTU = 1500
#: IPv4's minimum MTU (RFC 791: every host must take 68-byte datagrams); the kernel
#: refuses a smaller one on an interface with IPv4 (EINVAL).
MIN_MTU = 68
#: The UDP_SEGMENT cases send two or more segments of MTU - 28 (or - 27) B in one
#: datagram-sized send, which must stay within 65,507 B: hence at most 32,768.
MAX_MTU = 32768


@dataclass(frozen=True)
class Params(ProbeParams):
    sizes: tuple[int, ...] = option(
        DEFAULT_SIZES, "Datagram sizes for the truncation sweep.", flag="--size", metavar="N"
    )
    bufsize: int = option(1024, "Buffer passed to recvmsg()/recv_into().", metavar="N")
    burst: int = option(200, "Overflow: datagrams sent back to back per case.", metavar="N")
    burst_size: int = option(512, "Overflow: bytes per datagram (>= 4).", metavar="N")
    burst_rcvbuf: tuple[int, ...] = option(
        DEFAULT_RCVBUFS,
        "Overflow: SO_RCVBUF requested on the idle receiver, one case each.",
        flag="--burst-rcvbuf",
        metavar="N",
    )
    mtu: int = option(
        DEFAULT_MTU,
        "MTU of lo in the private network namespace of the path-MTU experiment (0 skips it).",
        metavar="N",
    )
    op_timeout: float = option(0.2, "How long recv() waits for an ICMP error.", metavar="S")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.sizes) > 0, "--size: give at least one datagram size")
        for s in self.sizes:
            require(0 <= s <= MAX_SIZE, f"--size must be 0..{MAX_SIZE} bytes, not {s}")
        require(len(set(self.sizes)) == len(self.sizes), "--size: each size at most once")
        require(
            1 <= self.bufsize <= 1_048_576,
            f"--bufsize must be 1..1048576 bytes, not {self.bufsize}",
        )
        require(1 <= self.burst <= 100_000, f"--burst must be 1..100000, not {self.burst}")
        require(
            4 <= self.burst_size <= 65_507,
            f"--burst-size must be 4..65507 bytes (4 carry a sequence number), "
            f"not {self.burst_size}",
        )
        require(len(self.burst_rcvbuf) > 0, "--burst-rcvbuf: give at least one size")
        require(
            len(set(self.burst_rcvbuf)) == len(self.burst_rcvbuf),
            "--burst-rcvbuf: each size at most once",
        )
        for b in self.burst_rcvbuf:
            require(1 <= b <= 1 << 30, f"--burst-rcvbuf must be 1..{1 << 30} bytes, not {b}")
        require(
            self.mtu == 0 or MIN_MTU <= self.mtu <= MAX_MTU,
            f"--mtu must be 0 (skip) or {MIN_MTU}..{MAX_MTU} bytes, not {self.mtu}",
        )
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )
