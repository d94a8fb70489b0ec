"""The restart matrix: a new socket binds the port of a listener that served one
connection, under every combination that decides the answer.

A listener (bound to port 0, so the kernel picks a free port) accepts one connection;
one side closes first, then the other; the listener is closed or kept; then a new socket
binds that same port explicitly. The settings vary: who closes first, SO_REUSEADDR on
the old listener and on the new socket, SO_REUSEPORT on both, an abortive close
(SO_LINGER {1, 0}). Each row counts the TIME_WAIT sockets on the port and on the
client's port, with the remaining timer, and records what bind(2) said.

The rows with the old listener still open close abortively: the open listener alone
decides them, and a TIME_WAIT would only be left behind for 60 s for nothing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.kernel.timewait import no_tw_reason, tw_created
from sockprobe.probes.reuseaddr.common import (
    NO_PROC,
    SO_REUSEPORT,
    TIME_WAIT,
    Ctx,
    Settings,
    inode,
    read_eof,
    set_opt,
    settle,
)
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import oserror_name


@dataclass(frozen=True)
class Scenario:
    closes_first: str  # "server" or "client"
    old_reuseaddr: bool
    new_reuseaddr: bool
    listener_open: bool
    reuseport: bool = False
    abortive: bool = False


def _matrix() -> tuple[Scenario, ...]:
    rows = [
        Scenario(first, old, new, listener_open=False)
        for first in ("server", "client")
        for old in (False, True)
        for new in (False, True)
    ]
    rows += [
        Scenario("server", old, new, listener_open=True, abortive=True)
        for old in (False, True)
        for new in (False, True)
    ]
    rows += [
        Scenario("server", False, False, listener_open=False, reuseport=True),
        Scenario("server", False, False, listener_open=True, reuseport=True, abortive=True),
        Scenario("server", False, False, listener_open=False, abortive=True),
    ]
    return tuple(rows)


MATRIX = _matrix()


@dataclass
class Outcome:
    index: int
    sc: Scenario
    port: int
    tw_on_port: Cell
    tw_on_client_port: Cell
    tw_left_s: Cell
    #: Sockets on the port that are neither TIME_WAIT nor the probe's own open listener.
    others: list[str]
    bind: Cell


def measure(ctx: Ctx, index: int, sc: Scenario) -> Outcome:
    lab, dl = ctx.lab, ctx.deadline
    if sc.reuseport and SO_REUSEPORT is None:
        na = NA("SO_REUSEPORT does not exist on this platform")
        return Outcome(index, sc, 0, na, na, na, [], na)

    def configure(s: socket.socket) -> None:
        set_opt(s, socket.SO_REUSEADDR, sc.old_reuseaddr)
        if sc.reuseport and SO_REUSEPORT is not None:
            set_opt(s, SO_REUSEPORT, True)

    old = lab.listener(backlog=1, configure=configure, role=f"row {index} old listener")
    port = old.getsockname()[1]
    old_inode = inode(old)
    client = lab.open_socket()
    client.settimeout(dl.timeout(5.0, "connecting"))
    client.connect(old.getsockname())
    old.settimeout(dl.timeout(5.0, "accepting"))
    server, _ = old.accept()
    lab.adopt(server)
    lab.record(f"row {index} client", client)
    cport = client.getsockname()[1]

    first, second = (server, client) if sc.closes_first == "server" else (client, server)
    if sc.abortive:
        # SO_LINGER {1, 0}: tcp_close() (net/ipv4/tcp.c) sees a zero linger time and
        # calls tcp_disconnect(), which sends RST and discards the send queue, so
        # neither side goes through TIME_WAIT.
        sockstate.abortive_linger(first)
    lab.close(first)
    # The other side reads the end of the stream (b'' after a FIN, ECONNRESET after a
    # RST), then closes too, as a well-behaved peer does.
    read_eof(ctx, second)
    lab.close(second)
    if not sc.listener_open:
        lab.close(old)
    rows = settle(ctx, port, cport)

    if kernel.IS_LINUX:
        tw_port = [r for r in rows if r.lport == port and r.state == TIME_WAIT]
        tw_client = [
            r for r in rows if r.lport == cport and r.rport == port and r.state == TIME_WAIT
        ]
        timer = (tw_port + tw_client)[0] if tw_port or tw_client else None
        tw_on_port: Cell = len(tw_port)
        tw_on_client: Cell = len(tw_client)
        left: Cell = NA(_no_tw_left(ctx.settings, sc)) if timer is None else round(timer.left_s, 2)
        others = sorted(
            {
                kernel.tcp_state_name(r.state)
                for r in rows
                if r.lport == port
                and r.state != TIME_WAIT
                and not (sc.listener_open and r.inode == old_inode)
            }
        )
    else:
        tw_on_port = tw_on_client = left = NA(NO_PROC)
        others = []

    new = lab.open_socket()
    set_opt(new, socket.SO_REUSEADDR, sc.new_reuseaddr)
    if sc.reuseport and SO_REUSEPORT is not None:
        set_opt(new, SO_REUSEPORT, True)
    try:
        new.bind(ctx.host.sockaddr(port))
        result = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(new)
    if sc.listener_open:
        lab.close(old)
    return Outcome(index, sc, port, tw_on_port, tw_on_client, left, others, result)


def _no_tw_left(s: Settings, sc: Scenario) -> str:
    if sc.abortive:
        return "no TIME_WAIT: the connection was reset (SO_LINGER {1, 0})"
    return no_tw_reason(s.max_tw_buckets)


def why(o: Outcome, s: Settings) -> str:
    """The reason for one row, from its settings and what was measured in it (never a
    TIME_WAIT the row did not count)."""
    sc = o.sc
    if isinstance(o.bind, NA):
        return o.bind.reason
    tw = o.tw_on_port if isinstance(o.tw_on_port, int) else 0
    tw_client = o.tw_on_client_port if isinstance(o.tw_on_client_port, int) else 0
    if o.bind == "ok":
        if sc.listener_open:
            if sc.reuseport:
                return "SO_REUSEPORT on both, same user: the sockets share the port"
            return "unexpected on Linux: the new socket shared a port with a listener"
        if tw == 0:
            if sc.abortive:
                return "the abortive close sent RST: no TIME_WAIT was left on the port"
            if tw_client > 0:
                return "the TIME_WAIT is on the client's port (the client closed first)"
            if tw_created(s.max_tw_buckets) is False:
                return f"{no_tw_reason(s.max_tw_buckets)}, so nothing held the port"
            return "no TIME_WAIT or other socket was left on the port"
        if sc.reuseport:
            # inet_bind_conflict(): a TIME_WAIT socket that kept SO_REUSEPORT never
            # conflicts with a new SO_REUSEPORT socket; the same-user test applies only to
            # live sockets.
            return "SO_REUSEPORT on both: a TIME_WAIT that kept SO_REUSEPORT does not block"
        if sc.old_reuseaddr and sc.new_reuseaddr:
            return "SO_REUSEADDR on both: the TIME_WAIT socket kept the old one's, no conflict"
        return "unexpected on Linux: TIME_WAIT without SO_REUSEADDR on both did not block"
    if o.bind == "EADDRINUSE":
        if sc.listener_open:
            return "the old listener is open: SO_REUSEADDR never shares a port with a listener"
        if tw > 0:
            if sc.new_reuseaddr and not sc.old_reuseaddr:
                return "TIME_WAIT inherited SO_REUSEADDR=0 from the old listener: both need it"
            if sc.old_reuseaddr and not sc.new_reuseaddr:
                return "the new socket did not set SO_REUSEADDR"
            if not sc.old_reuseaddr and not sc.new_reuseaddr:
                return "a TIME_WAIT socket holds the port and neither side set SO_REUSEADDR"
            return "unexpected on Linux: SO_REUSEADDR on both, TIME_WAIT still blocked"
        if o.others:
            return f"another socket took the port meanwhile ({', '.join(o.others)})"
        return "unexpected: no TIME_WAIT, closing or listening socket was seen on the port"
    return f"bind failed with {o.bind}"


def table(report: Report, outcomes: list[Outcome], s: Settings, address: str) -> None:
    t = report.table(
        "matrix",
        f"Restart matrix: a new socket binds the old listener's port again ({address})",
        [
            col("row", "#"),
            col("closes_first", "closes first"),
            col("close"),
            col("old_reuseaddr", "SO_REUSEADDR old"),
            col("new_reuseaddr", "SO_REUSEADDR new"),
            col("reuseport", "SO_REUSEPORT both"),
            col("old_listener", "old listener"),
            col("tw_on_port", "TIME_WAIT on port"),
            col("tw_on_client_port", "TIME_WAIT on client port"),
            col("tw_left_s", "TIME_WAIT left", "s", VOLATILE),
            col("bind"),
            col("why"),
        ],
        keys=[
            "closes_first",
            "close",
            "old_reuseaddr",
            "new_reuseaddr",
            "reuseport",
            "old_listener",
        ],
    )
    for o in outcomes:
        sc = o.sc
        t.add(
            o.index,
            sc.closes_first,
            "rst" if sc.abortive else "fin",
            sc.old_reuseaddr,
            sc.new_reuseaddr,
            sc.reuseport,
            "open" if sc.listener_open else "closed",
            o.tw_on_port,
            o.tw_on_client_port,
            o.tw_left_s,
            o.bind,
            why(o, s),
        )


def pick(outcomes: list[Outcome], **kw: Any) -> Outcome | None:
    for o in outcomes:
        if all(getattr(o.sc, k) == v for k, v in kw.items()):
            return o
    return None


def findings(report: Report, outcomes: list[Outcome], s: Settings) -> str:
    """Append the matrix findings; return the headline's clause."""
    f = report.findings
    base = dict(closes_first="server", listener_open=False, reuseport=False, abortive=False)
    combos = [
        ("neither socket", pick(outcomes, **base, old_reuseaddr=False, new_reuseaddr=False)),
        ("only the new socket", pick(outcomes, **base, old_reuseaddr=False, new_reuseaddr=True)),
        ("only the old listener", pick(outcomes, **base, old_reuseaddr=True, new_reuseaddr=False)),
        ("both", pick(outcomes, **base, old_reuseaddr=True, new_reuseaddr=True)),
    ]
    found = [(label, o) for label, o in combos if o is not None]
    headline = ""
    if found:
        tw_counts = sorted({o.tw_on_port for _, o in found if isinstance(o.tw_on_port, int)})
        lefts = [o.tw_left_s for _, o in found if isinstance(o.tw_left_s, float)]
        if tw_counts == [0]:
            tw_text = f" ({no_tw_reason(s.max_tw_buckets)})"
        elif tw_counts:
            tw_text = (
                f" ({'/'.join(map(str, tw_counts))} TIME_WAIT "
                f"socket{'' if tw_counts == [1] else 's'} on the port"
                + (_span(lefts, " s left") if lefts else "")
                + ")"
            )
        else:
            tw_text = ""
        f.append(
            "Server closed first"
            + tw_text
            + ": the rebind gave "
            + "; ".join(f"{o.bind} with SO_REUSEADDR on {label}" for label, o in found)
            + "."
        )
        ok_with = [label for label, o in found if o.bind == "ok"]
        fail_with = [label for label, o in found if o.bind != "ok"]
        if fail_with and ok_with == ["both"]:
            headline = (
                "after a server-first close the restarted server's bind worked only with "
                "SO_REUSEADDR on both the old listener and the new socket"
            )
        elif fail_with:
            headline = (
                f"after a server-first close the rebind worked with SO_REUSEADDR on "
                f"{', '.join(ok_with) or 'no combination'}; it failed with it on "
                f"{', '.join(fail_with)}"
            )
        else:
            headline = (
                "after a server-first close the rebind worked with every SO_REUSEADDR "
                f"combination{tw_text}"
            )
    client_rows = [
        o
        for o in outcomes
        if o.sc.closes_first == "client" and not o.sc.listener_open and not o.sc.reuseport
    ]
    if client_rows:
        res = sorted({str(o.bind) for o in client_rows})
        on_client = sorted({str(o.tw_on_client_port) for o in client_rows})
        on_port = sorted({str(o.tw_on_port) for o in client_rows})
        f.append(
            f"Client closed first: TIME_WAIT on the client's port {'/'.join(on_client)}, on "
            f"the server's port {'/'.join(on_port)}; the rebind gave {'/'.join(res)} in all "
            f"{len(client_rows)} SO_REUSEADDR combinations."
        )
    open_rows = [o for o in outcomes if o.sc.listener_open and not o.sc.reuseport]
    if open_rows:
        res = sorted({str(o.bind) for o in open_rows})
        rp = pick(outcomes, listener_open=True, reuseport=True)
        rp_text = f"; with SO_REUSEPORT on both it gave {rp.bind}" if rp is not None else ""
        f.append(
            f"With the old listener still open the bind gave {'/'.join(res)} in all "
            f"{len(open_rows)} SO_REUSEADDR combinations{rp_text}."
        )
    rp_closed = pick(outcomes, listener_open=False, reuseport=True)
    if rp_closed is not None:
        f.append(
            f"SO_REUSEPORT on both, listener closed after a server-first close: "
            f"{rp_closed.tw_on_port} TIME_WAIT on the port, bind {rp_closed.bind}."
        )
    ab = pick(outcomes, abortive=True, listener_open=False)
    if ab is not None:
        f.append(
            f"Abortive close (SO_LINGER {{1, 0}}) by the server: {ab.tw_on_port} TIME_WAIT "
            f"on the port and {ab.tw_on_client_port} on the client's; bind without any "
            f"option gave {ab.bind}."
        )
    return headline


def _span(values: list[float], unit: str) -> str:
    """[59.9, 60.0] -> ', 59.9-60.0 s left'; one distinct value -> ', 60.0 s left'."""
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return f", {lo}{unit}" if lo == hi else f", {lo}-{hi}{unit}"
