"""The lingering close: how a server keeps an RST from destroying its own response.

A client sends a request and, pipelined behind it, bytes the server will not read; the
server queues a response larger than the client's receive buffer and closes.

- close_unread: close() with unread bytes sends RST (tcp_close()) and discards the send
  queue: the client reads what had already reached it, then ECONNRESET; the rest of the
  response is gone.
- shutdown_drain_close: shutdown(SHUT_WR) first (the FIN goes out behind the response),
  then read and discard what the client sends until its EOF, then close(): nothing is
  unread at close, so no RST; the client reads the whole response, then EOF. (Apache
  httpd's lingering_close() and nginx's lingering_close do this, with a time bound.)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Lab
from sockprobe.probes.close.common import drain, fill, wait_inq
from sockprobe.report import VOLATILE, Report, col

CLIENT_RCVBUF = 4096
PIPELINED = b"p" * 100
RESPONSE_LIMIT = 256 << 10


@dataclass
class LingerRow:
    case: str
    response_b: int
    unread_b: int
    client_read_b: int
    client_end: str


def measure(lab: Lab, case: str) -> LingerRow:
    def small_rcvbuf(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)

    client, server = lab.tcp_pair(configure_client=small_rcvbuf, name=case)
    client.settimeout(lab.deadline.timeout(2.0, "sending the pipelined bytes"))
    client.sendall(PIPELINED)
    wait_inq(server, len(PIPELINED), lab.deadline)
    response = fill(server, limit=RESPONSE_LIMIT)
    server.setblocking(True)
    if case == "close_unread":
        unread = kernel.inq(server) or 0
        lab.close(server)
        read, end = drain(client, lab.deadline, "reading the response")
        sockstate.abortive_linger(client)
        lab.close(client)
    else:
        server.shutdown(socket.SHUT_WR)
        # Discard what the client sent; its EOF comes after it has read everything.
        server.settimeout(lab.deadline.timeout(2.0, "draining the client"))
        server.recv(len(PIPELINED))
        read, end = drain(client, lab.deadline, "reading the response")
        lab.close(client)  # the client's FIN: the server's drain ends with b''
        drain(server, lab.deadline, "waiting for the client's EOF")
        unread = kernel.inq(server) or 0
        lab.close(server)
    return LingerRow(case, response, unread, read, end)


def table(report: Report, rows: list[LingerRow]) -> None:
    t = report.table(
        "lingering_close",
        f"A response bigger than the client's buffer (SO_RCVBUF {CLIENT_RCVBUF} B), "
        f"{len(PIPELINED)} B of the client's never read by the server",
        [
            col("case"),
            col("response_b", "response queued", "B", VOLATILE),
            col("unread_b", "unread at the server", "B"),
            col("client_read_b", "client read", "B", VOLATILE),
            col("client_end", "client's read ended with"),
        ],
        keys=["case"],
    )
    for r in rows:
        t.add(r.case, r.response_b, r.unread_b, r.client_read_b, r.client_end)


def findings(report: Report, rows: list[LingerRow]) -> None:
    by = {r.case: r for r in rows}
    a, b = by.get("close_unread"), by.get("shutdown_drain_close")
    if a is None or b is None:
        return
    report.findings.append(
        f"close() with {a.unread_b} B unread reset the connection: the client read "
        f"{a.client_read_b} of a {a.response_b} B response, then {a.client_end}; "
        f"shutdown(SHUT_WR), drain, close() delivered {b.client_read_b} of {b.response_b} B, "
        f"then {b.client_end}."
    )
