"""Closes that send RST instead of FIN.

- unread_data: the server close()s with data it never read: tcp_close() (net/ipv4/tcp.c)
  counts the unread bytes and, when there are any, sends RST and discards them
  (RFC 2525 section 2.17, RFC 1122 4.2.2.13); what the client reads before and after the
  reset (the reset is reported once, data that arrived before it is read first, and
  after it recv returns b'').
- linger_zero: SO_LINGER {1, 0}, then close(): tcp_close() sees a zero linger time and
  calls tcp_disconnect(), which sends RST (for synchronised states, tcp_need_reset())
  and skips TIME_WAIT. socket(7) documents SO_LINGER but not this RST; it is kernel
  behaviour.
"""

from __future__ import annotations

from sockprobe.kernel import sockstate
from sockprobe.lab import Lab
from sockprobe.probes.close.common import (
    RECV_SIZE,
    REPLY,
    REQUEST,
    Closer,
    Scenario,
    Step,
    find,
    peer_saw,
    recv,
    res,
    send,
    wait_inq,
)
from sockprobe.report import Report


def measure(lab: Lab, steps: list[Step], closers: list[Closer]) -> None:
    sc = Scenario(lab, "unread_data", steps)
    sc.do("server", f"send({REPLY!r})", send(sc.server, REPLY))
    sc.do("client", f"send({REQUEST!r}), never read", send(sc.client, REQUEST))
    wait_inq(sc.server, len(REQUEST), lab.deadline)
    wait_inq(sc.client, len(REPLY), lab.deadline)
    sc.close("server", f"close() with {sc.record_unread('server')} B unread")
    peer = sc.settle("client", ("CLOSE",))
    for n in (1, 2, 3):
        sc.do("client", f"recv({RECV_SIZE}) #{n}", recv(sc.client))
    sc.do("client", f"send({len(REQUEST)} B)", send(sc.client, REQUEST))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(
            sc.name, "server", "close() with unread data", sc.unread, peer_saw(peer), srv_tw, cli_tw
        )
    )

    sc = Scenario(lab, "linger_zero", steps)
    sockstate.abortive_linger(sc.server)
    sc.close("server", "SO_LINGER {1, 0}; close()")
    peer = sc.settle("client", ("CLOSE",))
    sc.do("client", f"recv({RECV_SIZE}) #1", recv(sc.client))
    sc.do("client", f"recv({RECV_SIZE}) #2", recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(
            sc.name,
            "server",
            "SO_LINGER {1, 0}; close()",
            sc.unread,
            peer_saw(peer),
            srv_tw,
            cli_tw,
        )
    )


def findings(report: Report, steps: list[Step], closers: list[Closer]) -> str:
    by = {c.scenario: c for c in closers}
    r3 = [s for s in steps if s.scenario == "unread_data" and s.side == "client"][1:]
    c3 = by.get("unread_data")
    if r3 and c3 is not None:
        report.findings.append(
            f"close() with {c3.unread} unread byte(s) sent {c3.peer_state}: the peer's recv "
            + ", then ".join(res(s) for s in r3 if s.call.startswith("recv"))
            + "; after that send "
            + res(r3[-1])
            + ". The reset is reported once; data that arrived before it is read first."
        )
    c1, c4 = by.get("peer_close_recv"), by.get("linger_zero")
    if c4 is not None:
        s4 = find(steps, "linger_zero", "recv")
        plain = f", against {c1.closer_tw} after a plain close()" if c1 is not None else ""
        report.findings.append(
            f"SO_LINGER {{1, 0}}: close() sent {c4.peer_state} and the peer's recv "
            f"{res(s4)}; TIME_WAIT entries left on the closing side: {c4.closer_tw}{plain}."
        )
    c2 = by.get("peer_close_send")
    if c2 is not None:
        report.findings.append(
            f"After the send that drew an RST (peer_close_send), TIME_WAIT entries left: "
            f"{c2.closer_tw} on the side that closed first, {c2.peer_tw} on the other."
        )
    return (
        f"close with unread data: {res(r3[1]) if len(r3) > 1 else '?'}; "
        f"SO_LINGER {{1, 0}} TIME_WAIT: {c4.closer_tw if c4 else '?'}"
    )
