"""framing across a real path: how the peer's recv() calls cut this host's messages.

TCP carries a byte stream: the reads a receiver gets follow segment arrival and its
buffer, not the sender's write() calls. On loopback one segment holds up to 65,483 B; on
a path of MSS 1,448 a 6,000 B message needs five segments, and a reader that looks at
one recv() per message sees it split even if the sender wrote it whole.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, ClassVar

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.peer.client import Peer
from sockprobe.peer.steps import STEP_BYTES, Rule, ServerHalf, register
from sockprobe.probes import plural
from sockprobe.report import NA, VOLATILE, Report, col

HEADER = struct.Struct("!I")


@register
class TcpReader(ServerHalf):
    """Accept one connection and recv(read_size) until EOF, recording each read's size
    (never its content beyond the count)."""

    name = "tcp_reader"
    rules: ClassVar[dict[str, Rule]] = {
        "read_size": Rule(int, 1, 1 << 20, 4096),
        "seconds": Rule(float, 0.1, 30, 10),
    }

    def start(self) -> dict[str, Any]:
        self.lst = self.listener()
        self.reads: list[int] = []
        self.worker = self.lab.thread(self._serve, name="sockprobe-serve-reader")
        return {"port": self.lst.getsockname()[1]}

    def _serve(self) -> None:
        conn = self.accept(self.lst, self.lab.deadline.remaining())
        self.lab.close(self.lst)
        total = 0
        while total <= STEP_BYTES:
            conn.settimeout(self.lab.deadline.timeout(None, "reading"))
            chunk = conn.recv(self.p["read_size"])
            if not chunk:
                break
            total += len(chunk)
            self.reads.append(len(chunk))
        ti = kernel.tcp_info(conn)
        self.rcv_mss = ti.rcv_mss if ti is not None else None

    def finish(self) -> dict[str, Any]:
        self.worker.join(self.lab.deadline.remaining())
        return {"reads": list(self.reads), "rcv_mss": getattr(self, "rcv_mss", None)}


def run(peer: Peer, lab: Lab, report: Report, sizes: tuple[int, ...], read_size: int) -> None:
    messages = [b"hello", b"world", *[b"m" * n for n in sizes]]
    ready = peer.start("tcp_reader", read_size=read_size)
    c = lab.open_socket(family=socket.AF_INET6 if ":" in peer.address else socket.AF_INET)
    c.settimeout(lab.deadline.timeout(10.0, "connecting to the peer"))
    c.connect((peer.address, int(ready["port"])))
    lab.record("framing client", c)
    for m in messages:
        c.sendall(m)  # one write per message, as a naive sender does
    ti = kernel.tcp_info(c)
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.05)
    far = peer.finish("tcp_reader")
    lab.close(c)
    reads = [int(x) for x in far.get("reads") or []]
    # A message is intact when some read returned exactly its bytes, starting at its
    # first byte: the read boundaries are cumulative offsets.
    starts, pos = [], 0
    for m in messages:
        starts.append((pos, pos + len(m)))
        pos += len(m)
    cuts, acc = {0}, 0
    for n in reads:
        acc += n
        cuts.add(acc)
    intact = sum(
        1 for a, b in starts if a in cuts and b in cuts and not any(a < x < b for x in cuts)
    )
    split = sum(1 for a, b in starts if any(a < x < b for x in cuts))
    merged = len(messages) - intact - split  # whole, but sharing a read with another
    t = report.table(
        "path_framing",
        f"{len(messages)} messages written one write() each across the path to {peer.name}; "
        f"the peer reads with recv({read_size})",
        [
            col("messages"),
            col("bytes", "bytes", "B"),
            col("reads", "peer recv() calls", "", VOLATILE),
            col("intact", "messages read whole by one recv()", "", VOLATILE),
            col("split", "messages split across reads", "", VOLATILE),
            col("merged", "messages sharing a read", "", VOLATILE),
            col("mss", "path MSS (snd_mss)", "B"),
        ],
        keys=["messages"],
    )
    mss = ti.snd_mss if ti is not None else None
    t.add(
        len(messages),
        pos,
        len(reads),
        intact,
        split,
        merged,
        NA("TCP_INFO is not available here") if mss is None else mss,
    )
    path = "across the path" if mss is None else f"across the path (MSS {mss:,} B)"
    report.summary = (
        f"{len(messages)} messages {path} came back as "
        f"{plural(len(reads), 'read')}: {intact} intact, {split} split, {merged} merged"
    )
    got = sum(reads)
    report.findings.append(
        f"{path[0].upper()}{path[1:]} the peer's recv({read_size}) returned "
        f"{len(messages)} messages in {plural(len(reads), 'read')}: {intact} intact, "
        f"{split} split, {merged} sharing a read with another; "
        + (
            f"all {pos:,} B arrived."
            if got == pos
            else f"the peer read {got:,} of the {pos:,} B sent before the connection ended."
        )
    )
