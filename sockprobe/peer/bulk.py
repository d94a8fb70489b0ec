"""partial-send across a real path: what one send() takes while the peer does not read,
and the bandwidth-delay product against the buffers.

A send() returns as soon as its bytes are in this host's send buffer; while the peer's
application does not read, the sender's kernel can hold at most its send buffer plus
what the peer's receive window admitted. Once the peer reads, a transfer can keep the
path busy only if the window covers the bandwidth-delay product (throughput x RTT): a
window smaller than that caps throughput at window / RTT.
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.peer.client import Peer
from sockprobe.peer.steps import STEP_BYTES, Rule, ServerHalf, register
from sockprobe.report import NA, VOLATILE, Report, col


@register
class TcpSink(ServerHalf):
    """Accept one connection, read nothing for `pause` seconds, then read to EOF."""

    name = "tcp_sink"
    rules: ClassVar[dict[str, Rule]] = {
        "pause": Rule(float, 0, 10, 0.5),
        "rcvbuf": Rule(int, 0, 64 * 1024 * 1024, 0),
        "seconds": Rule(float, 0.1, 60, 30),
    }

    def start(self) -> dict[str, Any]:
        rcvbuf = self.p["rcvbuf"]

        def configure(s: socket.socket) -> None:
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

        self.lst = self.listener(configure=configure)
        self.got = 0
        self.info: dict[str, Any] = {}
        self.worker = self.lab.thread(self._serve, name="sockprobe-serve-sink")
        return {"port": self.lst.getsockname()[1]}

    def _serve(self) -> None:
        conn = self.accept(self.lst, self.lab.deadline.remaining())
        self.lab.close(self.lst)
        time.sleep(min(self.p["pause"], self.lab.deadline.remaining()))
        self.info["rcvbuf"] = conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # The transfer proper is timed here, on the reader's clock: from waking up to
        # EOF, less what was already queued (read at once, not carried by the path).
        queued = kernel.inq(conn)
        t0 = time.monotonic()
        while self.got <= STEP_BYTES:
            conn.settimeout(self.lab.deadline.timeout(None, "draining"))
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            self.got += len(chunk)
        self.info["drain_s"] = time.monotonic() - t0
        self.info["queued_at_wake"] = queued
        # Autotuning (tcp_rcv_space_adjust) only grows an unlocked buffer while the
        # application reads: the value at the end is the largest it reached.
        self.info["rcvbuf_end"] = conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        ti = kernel.tcp_info(conn)
        if ti is not None:
            self.info.update(rcv_mss=ti.rcv_mss, rtt_ms=ti.rtt_us / 1000)

    def finish(self) -> dict[str, Any]:
        self.worker.join(self.lab.deadline.remaining())
        return {"received": self.got, **self.info}


def run(peer: Peer, lab: Lab, report: Report, size: int, sndbuf: int) -> None:
    pause = 0.5
    ready = peer.start("tcp_sink", pause=pause)
    c = lab.open_socket(family=socket.AF_INET6 if ":" in peer.address else socket.AF_INET)
    if sndbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    c.settimeout(lab.deadline.timeout(10.0, "connecting to the peer"))
    c.connect((peer.address, int(ready["port"])))
    lab.record("bulk client", c)
    data = memoryview(b"b" * size)
    # While the peer sleeps: what one non-blocking send() takes, once the window has
    # been filled (a short wait lets the in-flight bytes be acknowledged).
    c.setblocking(False)
    first = 0
    try:
        first = c.send(data)
    except BlockingIOError:
        pass
    time.sleep(min(0.2, pause / 2))
    second = 0
    try:
        second = c.send(data[first:])
    except BlockingIOError:
        pass
    held = first + second
    c.settimeout(lab.deadline.timeout(None, "sending the rest"))
    c.sendall(data[held:])
    c.shutdown(socket.SHUT_WR)
    ti = kernel.tcp_info(c)
    snd = c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    far = peer.finish("tcp_sink")
    lab.close(c)
    received = int(far.get("received") or 0)
    rtt_ms = ti.rtt_us / 1000 if ti else None
    drain_s = far.get("drain_s")
    queued = far.get("queued_at_wake")
    carried = received - (queued if isinstance(queued, int) else 0)
    rate = carried / drain_s if isinstance(drain_s, (int, float)) and drain_s > 0 else None
    bdp = int(rate * rtt_ms / 1000) if rate is not None and rtt_ms else None
    rcvbuf_end = far.get("rcvbuf_end")
    t = report.table(
        "path_bulk",
        f"partial-send across the path to {peer.name}: {size:,} B, the peer reading nothing "
        f"for {pause:g} s",
        [
            col("accepted_first_b", "first send() took", "B", VOLATILE),
            col("held_b", "held while the peer slept", "B", VOLATILE),
            col("so_sndbuf_b", "SO_SNDBUF (read back)", "B"),
            col("peer_so_rcvbuf_b", "peer SO_RCVBUF after the pause", "B", VOLATILE),
            col("peer_so_rcvbuf_end_b", "peer SO_RCVBUF at the end", "B", VOLATILE),
            col("received_b", "peer received", "B"),
            col("rtt_ms", "RTT (tcpi_rtt)", "ms", VOLATILE),
            col("throughput_mb_s", "throughput after the pause (peer's clock)", "MB/s", VOLATILE),
            col("bdp_b", "bandwidth x delay", "B", VOLATILE),
        ],
        keys=["so_sndbuf_b"],
    )
    no_rtt = NA("TCP_INFO is not available here")
    no_rate = NA("the peer did not time its reads")
    t.add(
        first,
        held,
        snd,
        far.get("rcvbuf"),
        rcvbuf_end if isinstance(rcvbuf_end, int) else NA("the peer did not read it"),
        received,
        round(rtt_ms, 2) if rtt_ms else no_rtt,
        no_rate if rate is None else round(rate / 1e6, 2),
        (no_rtt if not rtt_ms else no_rate) if bdp is None else bdp,
    )
    speed = (
        "" if rate is None or not rtt_ms else f"; {rate / 1e6:.2f} MB/s over {rtt_ms:.2f} ms RTT"
    )
    report.summary = (
        f"while the peer slept this host's kernel took {held:,} of {size:,} B; the peer "
        f"received {received:,} B{speed}"
    )
    report.findings.append(
        f"While the peer read nothing, this host's kernel took {held:,} of {size:,} B "
        f"({first:,} in the first send()); the rest waited for the peer to read. The peer "
        f"received {received:,} B" + (", every byte" if received == size else f" of {size:,}") + "."
    )
    if rate is not None and bdp is not None and rtt_ms and isinstance(rcvbuf_end, int):
        report.findings.append(limit_finding(rate, rtt_ms, bdp, snd, rcvbuf_end))


def limit_finding(rate: float, rtt_ms: float, bdp: int, sndbuf: int, rcvbuf: int) -> str:
    """Which buffer could have capped the transfer. A connection keeps about its send
    buffer of unacknowledged bytes in flight (a write may overshoot it by the segment
    being filled) (the buffer holds each byte until its
    ACK, tcp_sendmsg waiting in sk_stream_wait_memory), and at most the window the
    peer's receive buffer lets it advertise (less the buffer's overhead share:
    tcp_win_from_space), so each allows at most buffer / RTT; the peer's buffer is
    taken at the end of the transfer, the largest autotuning made it."""
    rtt = rtt_ms / 1000
    snd_cap, rcv_cap = sndbuf / rtt, rcvbuf / rtt
    low_name, low = (
        ("this host's send buffer", snd_cap)
        if snd_cap <= rcv_cap
        else ("the peer's receive buffer", rcv_cap)
    )
    text = (
        f"After the pause the transfer ran at {rate / 1e6:.2f} MB/s over a {rtt_ms:.2f} ms "
        f"round trip: a bandwidth-delay product of {bdp:,} B. At this RTT this host's send "
        f"buffer of {sndbuf:,} B allows about {snd_cap / 1e6:.1f} MB/s and the "
        f"peer's receive buffer of {rcvbuf:,} B (at the end) at most {rcv_cap / 1e6:.1f} "
        "MB/s (buffer / RTT)"
    )
    if rate >= 0.5 * low:
        return text + f": {low_name} is the likely limit."
    return text + ": neither buffer was what limited it."
