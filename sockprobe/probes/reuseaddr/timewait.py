"""When TIME_WAIT is not simply "on the side that closed first, for 60 s".

1. Simultaneous close: both ends send FIN before either has seen the other's. Each goes
   FIN_WAIT1 -> CLOSING -> TIME_WAIT (RFC 793 figure 13; tcp_rcv_state_process), so both
   ends hold a TIME_WAIT. On loopback a FIN arrives within microseconds, so the probe
   makes the FINs cross: a `ret #0` socket filter on the server end drops what reaches it
   (the client's FIN, then the client's ACK of the server's FIN) while both ends shut
   down. Once it is detached, the unacknowledged FINs are retransmitted on the RTO (at
   least 200 ms, TCP_RTO_MIN; tcpdump here: +206 ms), which is why this case starts
   early and is read last.
2. An RST ends a TIME_WAIT: the server closed first (its TIME_WAIT on the server's
   port) and no listener is left. A new socket on the old client port sends a SYN;
   tcp_timewait_state_process() answers it with an ACK of the old connection
   (TCP_TW_SYN without a listener falls through to TCP_TW_ACK), the new client rejects
   that ACK with an RST whose sequence number is exactly the TIME_WAIT's rcv_nxt, and an
   in-window RST kills the TIME_WAIT unless net.ipv4.tcp_rfc1337 = 1.
3. A new SYN reopens a server-side TIME_WAIT: the same, with the listener still open.
   A SYN newer than the old connection (a later sequence number, or a newer timestamp)
   makes tcp_v4_rcv() drop the TIME_WAIT and hand the SYN to the listener: the same
   4-tuple connects again at once.

Every case closes its new connections abortively (RST), so none leaves a TIME_WAIT of
its own; a client still in SYN_SENT sends nothing when closed (tcp_disconnect() resets
only synchronised states, tcp_need_reset()).
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.kernel.timewait import (
    DropFilter,
    no_tw_reason,
    rst_kills_timewait,
    tw_created,
    uses_timestamps,
)
from sockprobe.probes.reuseaddr.common import (
    NO_PROC,
    Ctx,
    connected,
    read_eof,
    settle,
)
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import errno_name, oserror_name

#: How long a SYN's fate (answered, reset, accepted) may take on loopback: microseconds
#: in practice; a TIME_WAIT that survives this long survived the RST.
SYN_WAIT_S = 0.1
#: Simultaneous close: the retransmitted FIN leaves on the client's RTO (>= 200 ms; the
#: initial RTO of 1 s only before an RTT sample), so allow a few.
SIMUL_CAP_S = 1.5


@dataclass
class Case:
    case: str
    setting: str
    tw_before: Cell
    result: Cell
    tw_server: Cell
    tw_client: Cell
    rule: Cell
    why: str


@dataclass
class Simul:
    client: socket.socket | None = None
    server: socket.socket | None = None
    filt: DropFilter | None = None
    addrs: tuple[int, int] = (0, 0)
    mid_states: str = ""
    na: NA | None = None
    case: Case | None = field(default=None)


def _count(ctx: Ctx, port: int, cport: int) -> tuple[int, int]:
    """(TIME_WAIT on the server end port->cport, on the client end cport->port)."""
    return len(ctx.watch.time_waits(port, cport)), len(ctx.watch.time_waits(cport, port))


def simultaneous_start(ctx: Ctx) -> Simul:
    sim = Simul()
    if not kernel.IS_LINUX:
        sim.na = NA(NO_PROC)
        return sim
    lab = ctx.lab
    lst = lab.listener(backlog=1, role="simultaneous-close listener")
    client, server = connected(ctx, lst, "simultaneous-close client")
    lab.close(lst)
    sim.client, sim.server = client, server
    sim.addrs = (server.getsockname()[1], client.getsockname()[1])
    try:
        sim.filt = DropFilter(server)
    except OSError as exc:
        sim.na = NA(f"cannot attach a socket filter (SO_ATTACH_FILTER): {oserror_name(exc)}")
        return sim
    # The client's FIN is dropped at the server end; the server's FIN reaches the client
    # in FIN_WAIT1, which moves it to CLOSING (its ACK is dropped too): the FINs crossed.
    client.shutdown(socket.SHUT_WR)
    server.shutdown(socket.SHUT_WR)
    sim.mid_states = f"client {sockstate.tcp_state(client)}, server {sockstate.tcp_state(server)}"
    sim.filt.detach()
    return sim


def simultaneous_finish(ctx: Ctx, sim: Simul) -> Case:
    st = ctx.settings
    setting = f"tcp_max_tw_buckets={st.max_tw_buckets}"
    if sim.na is not None or sim.client is None or sim.server is None:
        na = sim.na or NA(NO_PROC)
        return Case("simultaneous_close", setting, 0, na, na, na, na, na.reason)
    # Both fd sockets read CLOSE once the kernel has replaced them with TIME_WAIT
    # sockets (tcp_time_wait() -> tcp_done()); the fds keep nothing but that state.
    cap = ctx.deadline.timeout(SIMUL_CAP_S, "waiting for the retransmitted FIN")
    end = time.monotonic() + cap
    while time.monotonic() < end:
        states = {sockstate.tcp_state(sim.client), sockstate.tcp_state(sim.server)}
        if states <= {"CLOSE", "TIME_WAIT"}:
            break
        time.sleep(0.002)
    ctx.lab.close(sim.client)
    ctx.lab.close(sim.server)
    port, cport = sim.addrs
    settle(ctx, port, cport)
    srv, cli = _count(ctx, port, cport)
    made = tw_created(st.max_tw_buckets)
    rule: Cell = NA("tcp_max_tw_buckets unreadable") if made is None else "both" if made else "none"
    if srv and cli:
        why = "the FINs crossed: each end went FIN_WAIT1 -> CLOSING -> TIME_WAIT"
    elif not srv and not cli and made is False:
        why = f"the FINs crossed, but {no_tw_reason(st.max_tw_buckets)}"
    else:
        why = f"TIME_WAIT on server {srv}, client {cli} (expected both)"
    return Case("simultaneous_close", setting, 0, sim.mid_states, srv, cli, rule, why)


def _server_first(
    ctx: Ctx, keep_listener: bool, role: str
) -> tuple[socket.socket, int, int, bool | None]:
    """A connection the server closed first; returns (listener, port, cport, timestamps).
    The listener is closed unless `keep_listener`."""
    lab = ctx.lab
    lst = lab.listener(backlog=2, role=f"{role} listener")
    client, server = connected(ctx, lst, f"{role} client", bind_client=True)
    ts = uses_timestamps(client)
    port, cport = lst.getsockname()[1], client.getsockname()[1]
    lab.close(server)
    read_eof(ctx, client)
    lab.close(client)
    if not keep_listener:
        lab.close(lst)
    settle(ctx, port, cport)
    return lst, port, cport, ts


def rst_in_time_wait(ctx: Ctx) -> Case:
    st = ctx.settings
    setting = f"tcp_rfc1337={st.rfc1337}"
    if not kernel.IS_LINUX:
        na = NA(NO_PROC)
        return Case("rst_in_time_wait", setting, na, na, na, na, na, na.reason)
    lab = ctx.lab
    _, port, cport, _ts = _server_first(ctx, False, "RST-in-TIME_WAIT")
    before, _ = _count(ctx, port, cport)
    new = lab.open_socket()
    try:
        new.bind(ctx.host.sockaddr(cport))
    except OSError as exc:
        lab.close(new)
        na = NA(f"could not bind the old client port again: {oserror_name(exc)}")
        return Case("rst_in_time_wait", setting, before, na, na, na, na, na.reason)
    new.setblocking(False)
    err = new.connect_ex((ctx.host.address, port))
    end = time.monotonic() + ctx.deadline.timeout(SYN_WAIT_S, "waiting for the SYN's answer")
    soerr = 0
    while time.monotonic() < end:
        # SO_ERROR is cleared by reading it: keep the first non-zero value.
        soerr = soerr or new.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if _count(ctx, port, cport)[0] == 0 and (soerr != 0 or before == 0):
            break
        time.sleep(0.001)
    state = sockstate.tcp_state(new)
    soerr = soerr or new.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if soerr:
        result = errno_name(soerr) or str(soerr)
    elif err not in (0, errno.EINPROGRESS):
        result = errno_name(err) or str(err)
    else:
        result = f"still {state}"
    after, _ = _count(ctx, port, cport)
    # Still in SYN_SENT (rfc1337 kept the TIME_WAIT): close() sends nothing from there.
    sockstate.abortive_linger(new)
    lab.close(new)
    kills = rst_kills_timewait(st.rfc1337)
    if before == 0:
        na = NA(f"no TIME_WAIT to end: {no_tw_reason(st.max_tw_buckets)}")
        return Case("rst_in_time_wait", setting, 0, result, after, 0, na, na.reason)
    rule: Cell = NA("tcp_rfc1337 unreadable") if kills is None else ("ended" if kills else "kept")
    if after == 0 and kills:
        why = (
            "the SYN drew the TIME_WAIT's ACK, the new client answered it with an in-window "
            "RST, and the RST ended the TIME_WAIT (tcp_rfc1337 = 0)"
        )
    elif after and kills is False:
        why = "tcp_rfc1337 = 1: the TIME_WAIT ignored the RST and stays"
    else:
        why = f"TIME_WAIT after the RST: {after} (rule: {rule})"
    return Case("rst_in_time_wait", setting, before, result, after, 0, rule, why)


def syn_reopens(ctx: Ctx) -> Case:
    st = ctx.settings
    setting = f"tcp_timestamps={st.timestamps}"
    if not kernel.IS_LINUX:
        na = NA(NO_PROC)
        return Case("syn_reopens", setting, na, na, na, na, na, na.reason)
    lab, dl = ctx.lab, ctx.deadline
    lst, port, cport, ts = _server_first(ctx, True, "SYN-reopen")
    before, _ = _count(ctx, port, cport)
    new = lab.open_socket()
    try:
        new.bind(ctx.host.sockaddr(cport))
    except OSError as exc:
        lab.close(new)
        lab.close(lst)
        na = NA(f"could not bind the old client port again: {oserror_name(exc)}")
        return Case("syn_reopens", setting, before, na, na, na, na, na.reason)
    new.settimeout(dl.timeout(SYN_WAIT_S * 5, "reconnecting from the old client port"))
    try:
        new.connect((ctx.host.address, port))
        result: Cell = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    after, _ = _count(ctx, port, cport)
    if result == "ok":
        lst.settimeout(dl.timeout(1.0, "accepting the reopened connection"))
        peer, addr = lst.accept()
        lab.adopt(peer)
        if addr[1] != cport:
            result = f"ok from port {addr[1]}"
        for end in (new, peer):
            sockstate.abortive_linger(end)
            lab.close(end)
    else:
        lab.close(new)
    lab.close(lst)
    how = "newer timestamp" if ts else "later sequence number"
    if before == 0:
        na = NA(f"no TIME_WAIT to reopen: {no_tw_reason(st.max_tw_buckets)}")
        return Case("syn_reopens", setting, 0, result, after, 0, na, na.reason)
    if result == "ok" and after == 0:
        why = (
            f"the SYN ({how} than the old connection's) ended the server's TIME_WAIT and "
            "the listener accepted the same 4-tuple at once"
        )
    else:
        why = f"connect gave {result}; TIME_WAIT after: {after}"
    return Case("syn_reopens", setting, before, result, after, 0, "reopened", why)


def table(report: Report, cases: list[Case]) -> None:
    t = report.table(
        "time_wait",
        "TIME_WAIT beyond 'the side that closed first': crossing FINs, an RST, a new SYN",
        [
            col("case"),
            col("setting"),
            col("tw_before", "TIME_WAIT before"),
            col("result"),
            col("tw_server", "TIME_WAIT server end"),
            col("tw_client", "TIME_WAIT client end"),
            col("rule", "kernel rule"),
            col("why"),
        ],
        keys=["case"],
    )
    for c in cases:
        t.add(c.case, c.setting, c.tw_before, c.result, c.tw_server, c.tw_client, c.rule, c.why)


def findings(report: Report, cases: list[Case]) -> None:
    by = {c.case: c for c in cases}
    sim = by.get("simultaneous_close")
    if sim is not None and isinstance(sim.tw_server, int):
        report.findings.append(
            f"Simultaneous close ({sim.result} once both had sent FIN): TIME_WAIT on the "
            f"server end {sim.tw_server}, on the client end {sim.tw_client}."
        )
    rst = by.get("rst_in_time_wait")
    if rst is not None and isinstance(rst.tw_before, int) and rst.tw_before:
        report.findings.append(
            f"An RST in the window of a server-side TIME_WAIT ({rst.setting}): TIME_WAIT "
            f"{rst.tw_before} before, {rst.tw_server} after; the new client's connect() "
            + (
                f"was {rst.result}."
                if str(rst.result).startswith("still")
                else f"gave {rst.result}."
            )
        )
    syn = by.get("syn_reopens")
    if syn is not None and isinstance(syn.tw_before, int) and syn.tw_before:
        report.findings.append(
            f"A new SYN from the old client port to a server-side TIME_WAIT with the "
            f"listener open: connect {syn.result}, TIME_WAIT {syn.tw_before} before and "
            f"{syn.tw_server} after."
        )
