"""`--synack-retries N`: a half-open request whose final ACK never comes. The listener
resends its SYN-ACK on a doubling timer and then drops the request without a word
(kernel/synretry.py, synack_schedule()); the client, ESTABLISHED on its side since the
first SYN-ACK, learns it only when it sends and gets an RST.

The listener's TCP_SYNCNT N stands in for net.ipv4.tcp_synack_retries (the request timer
uses the listener's own value when set, `reqsk_timer_handler()`), so the default 5 (63 s)
need not be waited for. The client's final ACKs are held back by a socket filter
(kernel/synfilter.py); each resent SYN-ACK shows up as one more segment received in the
client's TCP_INFO (tcpi_segs_in), and the request's end as the listener's half-open count
falling to 0. Slow by nature (2^(N+1)-1 s), so only when asked.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel.backlog import so_error
from sockprobe.kernel.synfilter import holding_acks
from sockprobe.kernel.synretry import synack_schedule
from sockprobe.lab import Lab
from sockprobe.probes.backlog.clients import errno_text, half_open, open_client, until
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import DeadlineExceeded

POLL_S = 0.002
GRACE_S = 1.5


@dataclass
class SynAck:
    retries: int
    stated: list[float]
    stated_drop: float
    resends: list[float]
    dropped_s: float | None
    #: SO_ERROR of the client after it sent a byte once the request was gone.
    send_error: int | None


def measure(lab: Lab, retries: int) -> SynAck:
    stated, drop = synack_schedule(retries)
    if lab.deadline.remaining() < drop + GRACE_S:
        raise DeadlineExceeded(
            f"--deadline {lab.deadline.seconds:g} s leaves too little time to watch a "
            f"half-open request expire ({drop:g} s needed)"
        )
    lst = lab.listener(
        backlog=8,
        configure=lambda s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, retries),
        role=f"synack: listener with TCP_SYNCNT {retries}",
    )
    c = open_client(lab, bind=True)
    resends: list[float] = []
    dropped: float | None = None
    with holding_acks(lst, [c.getsockname()[1]]):
        t0 = time.monotonic()
        c.connect_ex(lst.getsockname())
        seen = None
        end = t0 + drop + GRACE_S
        while time.monotonic() < end:
            lab.deadline.check("watching SYN-ACK resends")
            now = time.monotonic()
            info = kernel.tcp_info(c)
            segs = None if info is None else info.segs_in
            if segs is not None:
                if seen is None:
                    seen = segs  # the first SYN-ACK (it made the client ESTABLISHED)
                while seen < segs:
                    seen += 1
                    resends.append(now - t0)
            if now - t0 > 0.5 and half_open(lst) == 0:
                dropped = now - t0
                break
            time.sleep(POLL_S)
    send_error: int | None = None
    if dropped is not None:
        try:
            c.send(b"x")
        except OSError as exc:
            send_error = exc.errno
        got: list[int] = []

        def errored() -> bool:
            # Reading SO_ERROR clears it: keep the first value seen.
            err = so_error(c)
            if err:
                got.append(err)
            return bool(err)

        if send_error is None:
            until(lab, errored, "the RST for a forgotten request")
            send_error = got[0] if got else 0
    return SynAck(retries, stated, drop, resends, dropped, send_error)


def table(report: Report, s: SynAck) -> None:
    t = report.table(
        "synack",
        f"A half-open request whose final ACK never comes, listener TCP_SYNCNT {s.retries}",
        [
            col("event"),
            col("stated_s", "stated", "s after connect"),
            col("measured_s", "measured", "s after connect", VOLATILE),
        ],
        keys=["event"],
    )
    for i in range(max(len(s.stated), len(s.resends))):
        st: Cell = s.stated[i] if i < len(s.stated) else NA("the rule states none")
        me: Cell = round(s.resends[i], 3) if i < len(s.resends) else NA("none was seen")
        t.add(f"SYN-ACK resend {i + 1}", st, me)
    t.add(
        "request dropped",
        s.stated_drop,
        NA("still half-open at the end") if s.dropped_s is None else round(s.dropped_s, 3),
    )


def finding(s: SynAck) -> str:
    got = f"was dropped after {s.dropped_s:.2f} s" if s.dropped_s is not None else "was not dropped"
    then = ""
    if s.dropped_s is not None:
        then = (
            f"; the client, ESTABLISHED all along, learned of it only from its first send: "
            f"{errno_text(s.send_error) if s.send_error else 'no error'}"
        )
    agree = (
        len(s.resends) == len(s.stated)
        and s.dropped_s is not None
        and s.send_error == errno.ECONNRESET
    )
    return (
        f"Listener TCP_SYNCNT {s.retries} (as tcp_synack_retries): the SYN-ACK was resent "
        f"{len(s.resends)} time{'s' if len(s.resends) != 1 else ''}"
        + (f" (at {', '.join(f'{t:.2f}' for t in s.resends)} s)" if s.resends else "")
        + f" and the request {got} (the rule: {len(s.stated)} at "
        + (", ".join(f"{t:g}" for t in s.stated) or "-")
        + f" s, dropped at {s.stated_drop:g} s){then}"
        + (", as stated." if agree else ".")
    )
