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
from sockprobe.report import VOLATILE, Report, col


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
        while self.got <= STEP_BYTES:
            conn.settimeout(self.lab.deadline.timeout(None, "draining"))
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            self.got += len(chunk)
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
    t0 = time.monotonic()
    c.sendall(data[held:])
    c.shutdown(socket.SHUT_WR)
    ti = kernel.tcp_info(c)
    snd = c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    far = peer.finish("tcp_sink")
    elapsed = max(1e-6, time.monotonic() - t0)
    lab.close(c)
    received = int(far.get("received") or 0)
    rtt_ms = ti.rtt_us / 1000 if ti else None
    rate = (size - held) / elapsed
    bdp = int(rate * rtt_ms / 1000) if rtt_ms else None
    t = report.table(
        "path_bulk",
        f"partial-send across the path to {peer.name}: {size:,} B, the peer reading nothing "
        f"for {pause:g} s",
        [
            col("accepted_first_b", "first send() took", "B", VOLATILE),
            col("held_b", "held while the peer slept", "B", VOLATILE),
            col("so_sndbuf_b", "SO_SNDBUF (read back)", "B"),
            col("peer_so_rcvbuf_b", "peer SO_RCVBUF (read back)", "B", VOLATILE),
            col("received_b", "peer received", "B"),
            col("rtt_ms", "RTT (tcpi_rtt)", "ms", VOLATILE),
            col("throughput_mb_s", "throughput after the pause", "MB/s", VOLATILE),
            col("bdp_b", "bandwidth x delay", "B", VOLATILE),
        ],
        keys=["so_sndbuf_b"],
    )
    t.add(
        first,
        held,
        snd,
        far.get("rcvbuf"),
        received,
        round(rtt_ms, 2) if rtt_ms else None,
        round(rate / 1e6, 2),
        bdp,
    )
    report.summary = (
        f"while the peer slept this host's kernel took {held:,} of {size:,} B; the peer "
        f"received {received:,} B; {rate / 1e6:.2f} MB/s over {rtt_ms or 0:.2f} ms RTT"
    )
    report.findings.append(
        f"While the peer read nothing, this host's kernel took {held:,} of {size:,} B "
        f"({first:,} in the first send()); the rest waited for the peer to read. The peer "
        f"received {received:,} B" + (", every byte" if received == size else f" of {size:,}") + "."
    )
    peer_rcvbuf = far.get("rcvbuf")
    if bdp is not None and rtt_ms and isinstance(peer_rcvbuf, int):
        # The rule: throughput <= window / RTT. The peer's receive buffer bounds the
        # window it can advertise (less its overhead share, tcp_adv_win_scale's job
        # before 6.6, the truesize ratio since), so window / RTT is an upper bound.
        cap = peer_rcvbuf / (rtt_ms / 1000)
        verdict = (
            "so the receive window could not have been what limited it"
            if cap > rate * 1.5
            else "so the receive window is a likely limit"
        )
        report.findings.append(
            f"After the pause the transfer ran at {rate / 1e6:.2f} MB/s over a {rtt_ms:.2f} ms "
            f"round trip: a bandwidth-delay product of {bdp:,} B. The peer's receive buffer "
            f"of {peer_rcvbuf:,} B allows at most {cap / 1e6:.1f} MB/s at this RTT "
            f"(buffer / RTT), {verdict}; this host's send buffer is {snd:,} B."
        )
