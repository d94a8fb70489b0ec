"""Write-write-read across a real path: the agent echoes, this host writes.

A round is two small writes and one small reply. On a path of round-trip time RTT the
kernel's rules give three costs (measured here, predicted from the measured RTT and the
agent's delayed-ACK timeout, tcpi_ato):
- TCP_NODELAY: both pieces leave at once and the reply follows the second: about 1 RTT.
- Nagle, receiver in quick-ACK mode: the first piece is ACKed at once, the second leaves
  when that ACK arrives, the reply comes back: about 2 RTT. A connection starts in
  quick-ACK mode (tcp_incr_quickack() in net/ipv4/tcp_input.c, at most TCP_MAX_QUICKACKS,
  16, immediate ACKs) so the first rounds cost this.
- Nagle, delayed ACK: the agent holds the first ACK for its delayed-ACK timer, so the
  round costs about 2 RTT + that timer. The timer is min(ato, max(srtt, 40 ms),
  tcp_delack_max) (tcp_output.c tcp_send_delayed_ack; tcp_delack_max is 200 ms or the
  route's locked rto_min when lower), computed from the agent's tcpi_ato, tcpi_rtt and
  its route back to this host. ato starts at TCP_ATO_MIN (40 ms) and grows only while
  segments arrive less than ato apart (tcp_event_data_recv()), which a request's two
  pieces never do, so a longer path adds round trips, not a longer timer.
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
from sockprobe.probes.nagle.wwr import delack_timeout_ms
from sockprobe.report import NA, VOLATILE, Report, col


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
        # The route back to the controller can cap this side's delayed-ACK timer.
        rto_min = _route_rto_min_ms(conn.getpeername()[0])
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
                    "rto_min_ms": rto_min,
                }

    def finish(self) -> dict[str, Any]:
        self.worker.join(self.lab.deadline.remaining())
        return {"served": self.served, **self.info}


MODES = ("nagle", "nodelay")


def _route_rto_min_ms(address: str) -> float | None:
    """The locked rto_min of this host's route to `address` (kernel/route.py), or None."""
    if not kernel.IS_LINUX:
        return None
    from sockprobe.kernel import route

    try:
        return route.rto_min_ms(address)
    except OSError:
        return None


def _timer_ms(far: dict[str, Any]) -> float | None:
    """The delayed-ACK timer the agent arms, from what it read (None when it could not
    read TCP_INFO)."""
    ato, srtt = far.get("ato_ms"), far.get("rtt_ms")
    if ato is None or srtt is None:
        return None
    rto_min = far.get("rto_min_ms")
    return delack_timeout_ms(float(ato), float(srtt), None if rto_min is None else float(rto_min))


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


def _finding(results: dict[str, dict[str, Any]], rtt: float, timer: float | None) -> str:
    """Nagle against TCP_NODELAY across the path; a stall is predicted only from the
    timer the peer read, and rounds are called quick only when they were."""
    nodelay = statistics.median(results["nodelay"]["rtts"])
    nagle: list[float] = results["nagle"]["rtts"]
    far = results["nagle"]["far"]
    text = (
        f"Across the path (round trip {rtt:.2f} ms, the fastest TCP_NODELAY round), "
        f"TCP_NODELAY rounds took a median {nodelay:.2f} ms ({nodelay / rtt:.2f} RTT)."
    )
    if timer is None:
        return text + (
            f" With Nagle the median was {statistics.median(nagle):.2f} ms; the peer could "
            "not read its delayed-ACK timeout (TCP_INFO), so no stall is predicted."
        )
    stall_at = 2 * rtt + timer / 2
    quick = next((i for i, x in enumerate(nagle) if x >= stall_at), len(nagle))
    stalled = [x for x in nagle if x >= stall_at]
    if not stalled:
        return text + (
            " With Nagle no round reached 2 RTT + half the delayed-ACK timer: the peer "
            f"acknowledged every first piece at once in these {len(nagle)} rounds."
        )
    start = " With Nagle "
    if quick and all(x < 2.5 * rtt for x in nagle[:quick]):
        start += (
            f"{plural(quick, 'round')} at the start took under 2.5 RTT (the peer "
            "acknowledged at once, in quick-ACK mode), then "
        )
    route = (
        "" if far.get("rto_min_ms") is None else f", its route's rto_min {far['rto_min_ms']:g} ms"
    )
    return text + (
        f"{start}{len(stalled)} of {len(nagle)} rounds took a median "
        f"{statistics.median(stalled):.2f} ms against a predicted 2 RTT + timer = "
        f"{2 * rtt + timer:.2f} ms (the peer's delayed-ACK timer {timer:g} ms: min(tcpi_ato "
        f"{far['ato_ms']:g} ms, max(its srtt, 40 ms), 200 ms{route}), tcp_send_delayed_ack)."
    )


def run(peer: Peer, lab: Lab, report: Report, rounds: int, size: int) -> None:
    """The write-write-read table and findings across the path."""
    results = {m: _round_trips(peer, lab, m, rounds, size) for m in MODES}
    # The path's round trip: the fastest TCP_NODELAY round, which waits on nothing
    # but the path and the agent's read-and-reply.
    rtt = min(results["nodelay"]["rtts"])
    timer = _timer_ms(results["nagle"]["far"])
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
            col("stalled_rounds", "rounds >= 2 RTT + timer/2", "", VOLATILE),
            col("peer_ato_ms", "peer ACK timeout (tcpi_ato)", "ms", VOLATILE),
            col("peer_delack_ms", "peer delayed-ACK timer", "ms", VOLATILE),
        ],
        keys=["mode"],
    )
    no_info = NA("the peer could not read TCP_INFO")
    for m in MODES:
        r = results[m]["rtts"]
        med = statistics.median(r)
        far = results[m]["far"]
        far_timer = _timer_ms(far)
        t.add(
            m,
            round(med, 3),
            round(min(r), 3),
            round(max(r), 3),
            round(med / rtt, 2) if rtt > 0 else None,
            sum(1 for x in r if x < 2.5 * rtt),
            no_info if far_timer is None else sum(1 for x in r if x >= 2 * rtt + far_timer / 2),
            no_info if far.get("ato_ms") is None else far["ato_ms"],
            no_info if far_timer is None else far_timer,
        )
    report.findings.append(_finding(results, rtt, timer))
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
