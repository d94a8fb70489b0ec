"""End of stream: what recv() and send() do after the peer's close(), and the b'' that
a local shutdown(SHUT_RD) produces with nothing received.

- peer_close_recv: the server close()s; the client reads b'' again and again.
- peer_close_send: the server close()s; the client sends twice: the first send is
  accepted (the kernel cannot know yet), the fully closed peer answers it with RST, the
  second send fails with EPIPE; a recv then returns b'' because the FIN came first.
- local_shutdown_rd: the client shuts its own reading side: recv() returns b'' at once
  though the peer sent nothing and is still ESTABLISHED. So b'' is "no more data for
  this reader", which is an orderly close by the peer only when it is the first b''
  with no error and no local shutdown before it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from sockprobe.lab import Lab
from sockprobe.probes.close.common import (
    RECV_SIZE,
    REQUEST,
    Closer,
    Scenario,
    Step,
    find,
    peer_saw,
    recv,
    res,
    send,
    shutdown,
)
from sockprobe.report import Report


def measure(lab: Lab, steps: list[Step], closers: list[Closer]) -> None:
    # Plain close: FIN; the reader gets end-of-file, every time it asks.
    sc = Scenario(lab, "peer_close_recv", steps)
    sc.close("server")
    peer = sc.settle("client", ("CLOSE_WAIT",))
    for n in (1, 2, 3):
        sc.do("client", f"recv({RECV_SIZE}) #{n}", recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(Closer(sc.name, "server", "close()", sc.unread, peer_saw(peer), srv_tw, cli_tw))

    # Send after the peer's close: accepted once, answered with RST, then EPIPE.
    sc = Scenario(lab, "peer_close_send", steps)
    sc.close("server")
    peer = sc.settle("client", ("CLOSE_WAIT",))
    sc.do("client", f"send({len(REQUEST)} B) #1", send(sc.client, REQUEST), settle=("CLOSE",))
    sc.do("client", f"send({len(REQUEST)} B) #2", send(sc.client, REQUEST))
    sc.do("client", f"recv({RECV_SIZE})", recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(Closer(sc.name, "server", "close()", sc.unread, peer_saw(peer), srv_tw, cli_tw))

    # A local shutdown(SHUT_RD): b'' with nothing received and the peer still there.
    sc = Scenario(lab, "local_shutdown_rd", steps)
    sc.do("client", "shutdown(SHUT_RD)", shutdown(sc.client, socket.SHUT_RD))
    sc.do("client", f"recv({RECV_SIZE})", recv(sc.client))
    sc.do("server", "recv, non-blocking", _recv_nonblocking(sc.server))
    # Nothing to show in TIME_WAIT here: abort both ends.
    sc.finish(abort=True)


def _recv_nonblocking(s: socket.socket) -> Callable[[], bytes]:
    def call() -> bytes:
        s.setblocking(False)
        return s.recv(RECV_SIZE)

    return call


def findings(report: Report, steps: list[Step]) -> str:
    f = report.findings
    s1 = [s for s in steps if s.scenario == "peer_close_recv" and s.side == "client"]
    if s1:
        f.append(
            f"After the peer's close(), recv {_join([res(s) for s in s1])} "
            f"({len(s1)} calls, state {s1[-1].state}): end of stream, not an error."
        )
    first = find(steps, "peer_close_send", f"send({len(REQUEST)} B) #1")
    second = find(steps, "peer_close_send", f"send({len(REQUEST)} B) #2")
    after = find(steps, "peer_close_send", "recv")
    if first and second:
        f.append(
            f"The first send after the peer's close() {res(first)}, and the peer answered "
            f"with RST (the sender's state became {first.state}); the second {res(second)}; "
            f"recv then {res(after)}, because the FIN had arrived before the RST."
        )
    rd = find(steps, "local_shutdown_rd", "recv")
    peer = find(steps, "local_shutdown_rd", "recv, non-blocking")
    if rd is not None and peer is not None:
        f.append(
            f"After a local shutdown(SHUT_RD), recv {res(rd)} with nothing received, while "
            f"the peer, still {peer.state}, had sent nothing (its own recv {res(peer)}): "
            "b'' means an orderly close by the peer only when it is the first b'' with no "
            "error and no local shutdown before it."
        )
    return f"recv after close: {res(s1[0]) if s1 else '?'}; 2nd send: {res(second)}"


def _join(items: list[str]) -> str:
    uniq = sorted(set(items))
    if len(uniq) == 1:
        return f"{uniq[0]} every time"
    return ", then ".join(items)
