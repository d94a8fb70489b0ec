"""Write-write-read across a real path: the agent echoes, this host writes.

A round is two small writes and one small reply. On a path of round-trip time RTT the
kernel's rules give three costs (measured here, predicted from the measured RTT and the
agent's delayed-ACK timeout, tcpi_ato):
- TCP_NODELAY: both pieces leave at once and the reply follows the second: about 1 RTT.
- Nagle, receiver in quick-ACK mode: the first piece is ACKed at once, the second leaves
  when that ACK arrives, the reply comes back: about 2 RTT. A connection starts in
  quick-ACK mode (tcp_incr_quickack() in net/ipv4/tcp_input.c, at most TCP_MAX_QUICKACKS,
  16, immediate ACKs) so the first rounds cost this.
- Nagle, delayed ACK: the agent holds the first ACK for its delayed-ACK timeout, so the
  round costs about 2 RTT + ato. The timeout starts at TCP_ATO_MIN (40 ms) and follows
  the gaps between arriving segments (tcp_event_data_recv()), so on a long path it is
  not the loopback's fixed 40 ms.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any, ClassVar

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.peer.client import Peer
from sockprobe.peer.steps import STEP_BYTES, Rule, ServerHalf, register
from sockprobe.probes import plural
from sockprobe.report import VOLATILE, Report, col


@register
class TcpEcho(ServerHalf):
    """Accept one connection; for each request of `request` bytes send `reply` bytes."""

    name = "tcp_echo"
    rules: ClassVar[dict[str, Rule]] = {
        "rounds": Rule(int, 1, 10_000, 20),
        "request": Rule(int, 1, 65_536, 20),
        "reply": Rule(int, 1, 65_536, 10),
        "seconds": Rule(float, 0.1, 60, 30),
    }

    def start(self) -> dict[str, Any]:
        self.lst = self.listener()
        self.served = 0
        self.info: dict[str, Any] = {}
        self.worker = self.lab.thread(self._serve, name="sockprobe-serve-echo")
        return {"port": self.lst.getsockname()[1]}

    def _serve(self) -> None:
        conn = self.accept(self.lst, self.lab.deadline.remaining())
        self.lab.close(self.lst)
        # The reply must not wait on Nagle itself: only the controller's writes are
        # under test.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        total = 0
        for _ in range(self.p["rounds"]):
            got = 0
            while got < self.p["request"]:
                conn.settimeout(self.lab.deadline.timeout(None, "reading a request"))
                chunk = conn.recv(self.p["request"] - got)
                if not chunk:
                    return
                got += len(chunk)
                total += len(chunk)
                if total > STEP_BYTES:
                    return
            conn.sendall(b"r" * self.p["reply"])
            self.served += 1
            ti = kernel.tcp_info(conn)
            if ti is not None:
                self.info = {
                    "ato_ms": ti.ato_us / 1000,
                    "rtt_ms": ti.rtt_us / 1000,
                    "rcv_mss": ti.rcv_mss,
                    "snd_mss": ti.snd_mss,
                }

    def finish(self) -> dict[str, Any]:
        self.worker.join(self.lab.deadline.remaining())
        return {"served": self.served, **self.info}


MODES = ("nagle", "nodelay")


def _round_trips(peer: Peer, lab: Lab, mode: str, rounds: int, size: int) -> dict[str, Any]:
    ready = peer.start("tcp_echo", rounds=rounds, request=2 * size, reply=size)
    c = lab.open_socket(family=socket.AF_INET6 if ":" in peer.address else socket.AF_INET)
    if mode == "nodelay":
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.settimeout(lab.deadline.timeout(10.0, "connecting to the peer"))
    c.connect((peer.address, int(ready["port"])))
    lab.record(f"wwr {mode} client", c)
    rtts: list[float] = []
    piece = b"q" * size
    for _ in range(rounds):
        t0 = time.perf_counter()
        c.sendall(piece)
        c.sendall(piece)
        got = 0
        while got < size:
            c.settimeout(lab.deadline.timeout(None, f"write-write-read ({mode})"))
            chunk = c.recv(size - got)
            if not chunk:
                break
            got += len(chunk)
        rtts.append((time.perf_counter() - t0) * 1000)
    ti = kernel.tcp_info(c)
    lab.close(c)
    far = peer.finish("tcp_echo")
    return {
        "rtts": rtts,
        "client_rtt_ms": ti.rtt_us / 1000 if ti else None,
        "snd_mss": ti.snd_mss if ti else None,
        "far": far,
    }


def run(peer: Peer, lab: Lab, report: Report, rounds: int, size: int) -> None:
    """The write-write-read table and findings across the path."""
    results = {m: _round_trips(peer, lab, m, rounds, size) for m in MODES}
    # The path's round trip: the fastest TCP_NODELAY round, which waits on nothing
    # but the path and the agent's read-and-reply.
    rtt = min(results["nodelay"]["rtts"])
    ato = results["nagle"]["far"].get("ato_ms")
    t = report.table(
        "path_wwr",
        f"Write-write-read across the path to {peer.name}: {rounds} rounds of two {size} B "
        "writes, then a reply",
        [
            col("mode"),
            col("median_ms", "median", "ms", VOLATILE),
            col("min_ms", "min", "ms", VOLATILE),
            col("max_ms", "max", "ms", VOLATILE),
            col("median_rtts", "median / path RTT", "", VOLATILE),
            col("quick_rounds", "rounds < 2.5 RTT", "", VOLATILE),
            col("stalled_rounds", "rounds >= 2 RTT + ato/2", "", VOLATILE),
            col("peer_ato_ms", "peer ACK timeout (tcpi_ato)", "ms", VOLATILE),
        ],
        keys=["mode"],
    )
    for m in MODES:
        r = results[m]["rtts"]
        med = statistics.median(r)
        far_ato = results[m]["far"].get("ato_ms")
        stall_at = 2 * rtt + (far_ato or 40.0) / 2
        t.add(
            m,
            round(med, 3),
            round(min(r), 3),
            round(max(r), 3),
            round(med / rtt, 2) if rtt > 0 else None,
            sum(1 for x in r if x < 2.5 * rtt),
            sum(1 for x in r if x >= stall_at),
            far_ato,
        )
    nagle = results["nagle"]["rtts"]
    quick = next((i for i, x in enumerate(nagle) if x >= 2 * rtt + (ato or 40.0) / 2), len(nagle))
    stalled = [x for x in nagle if x >= 2 * rtt + (ato or 40.0) / 2]
    sentence = (
        f"Across the path (round trip {rtt:.2f} ms, the fastest TCP_NODELAY round), "
        f"TCP_NODELAY rounds took a median {statistics.median(results['nodelay']['rtts']):.2f} ms "
        f"({statistics.median(results['nodelay']['rtts']) / rtt:.2f} RTT)."
    )
    if stalled and ato is not None:
        sentence += (
            f" With Nagle {plural(quick, 'round')} at the start took about 2 RTT (the peer "
            f"acknowledged at once, in quick-ACK mode), then {len(stalled)} of {len(nagle)} "
            "rounds took a "
            f"median {statistics.median(stalled):.2f} ms against a predicted 2 RTT + ato = "
            f"{2 * rtt + ato:.2f} ms (the peer's delayed-ACK timeout read {ato:g} ms)."
        )
    elif not stalled:
        sentence += (
            f" With Nagle no round reached 2 RTT + half the delayed-ACK timeout: the peer "
            f"acknowledged every first piece at once in these {len(nagle)} rounds."
        )
    report.findings.append(sentence)
    med = {m: statistics.median(results[m]["rtts"]) for m in MODES}
    report.summary = (
        f"path RTT {rtt:.2f} ms; write-write-read median TCP_NODELAY {med['nodelay']:.2f} ms "
        f"({med['nodelay'] / rtt:.2f} RTT), Nagle {med['nagle']:.2f} ms "
        f"({med['nagle'] / rtt:.2f} RTT)"
    )
    mss = results["nodelay"]["snd_mss"]
    if mss:
        report.findings.append(
            f"The path's MSS (TCP_INFO snd_mss on this host) is {mss} B: a write larger "
            "than that leaves in several segments even with TCP_NODELAY."
        )
