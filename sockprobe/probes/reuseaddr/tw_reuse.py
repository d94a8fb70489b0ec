"""tcp_tw_reuse and the two ways connect() can take a client-side TIME_WAIT over.

1. Pinned range: a new socket whose ephemeral range is one port, the port a client-side
   TIME_WAIT holds (IP_LOCAL_PORT_RANGE), connects to the same server, at once and again
   after net.ipv4.tcp_tw_reuse_delay. The kernel's own port choice is the one path that
   consults tcp_tw_reuse (__inet_hash_connect -> tcp_twsk_unique with `twp`).
2. bind() then connect(): the new socket binds that port itself (SO_REUSEADDR on both
   the old client and the new one, or the bind conflicts with the TIME_WAIT), then
   connects to the same server. tcp_twsk_unique() is then called without `twp`, and
   takes the 4-tuple over at once whenever the old connection used timestamps,
   whatever tcp_tw_reuse says.

Each row states the precondition it measured: how many TIME_WAIT sockets held that
4-tuple just before the attempt and whether the old connection used TCP timestamps.
Without a TIME_WAIT (tcp_max_tw_buckets 0) the port is simply free, and the row says so
instead of crediting tcp_tw_reuse.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import reuse, sockstate
from sockprobe.kernel.timewait import (
    bind_connect_takeover,
    connect_reuse,
    no_tw_reason,
    uses_timestamps,
)
from sockprobe.probes.reuseaddr.common import (
    NO_PROC,
    Ctx,
    Settings,
    connected,
    read_eof,
    setting_cell,
    settle,
)
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import oserror_name


@dataclass
class Attempt:
    attempt: str
    method: str
    after_s: Cell
    tw_before: Cell
    timestamps: Cell
    result: Cell
    got_port: Cell
    tw_after: Cell
    #: What the kernel's rule predicts from the settings and the measured precondition.
    rule: Cell
    why: str


@dataclass
class Old:
    """A closed client connection whose TIME_WAIT sits on the client's port."""

    port: int = 0
    cport: int = 0
    timestamps: bool | None = None
    started: float = 0.0


@dataclass
class TwReuse:
    listener: socket.socket | None = None
    pinned: Old = field(default_factory=Old)
    attempts: list[Attempt] = field(default_factory=list)
    na: NA | None = None


def _client_first_close(ctx: Ctx, tw: TwReuse, role: str, reuseaddr: bool) -> Old:
    lab = ctx.lab
    assert tw.listener is not None
    client, server = connected(
        ctx, tw.listener, role, configure_client=reuseaddr, bind_client=reuseaddr
    )
    old = Old(tw.listener.getsockname()[1], client.getsockname()[1], uses_timestamps(client))
    lab.close(client)
    read_eof(ctx, server)
    lab.close(server)
    settle(ctx, old.port, old.cport)
    old.started = time.monotonic()
    return old


def _tw_count(ctx: Ctx, old: Old) -> int:
    return len(ctx.watch.time_waits(old.cport, old.port))


def _finish_connection(ctx: Ctx, tw: TwReuse, s: socket.socket) -> None:
    """Accept the new connection and abort both ends (RST): it must not leave a
    TIME_WAIT of its own."""
    assert tw.listener is not None
    tw.listener.settimeout(ctx.deadline.timeout(5.0, "accepting"))
    peer, _ = tw.listener.accept()
    ctx.lab.adopt(peer)
    for end in (s, peer):
        sockstate.abortive_linger(end)
        ctx.lab.close(end)


def _attempt(ctx: Ctx, tw: TwReuse, old: Old, label: str, method: str) -> Attempt:
    lab, dl, st = ctx.lab, ctx.deadline, ctx.settings
    before = _tw_count(ctx, old)
    age_ms = (time.monotonic() - old.started) * 1000
    s = lab.open_socket()
    if method == "pinned_range":
        reuse.pin_local_port_range(s, old.cport)
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(dl.timeout(5.0, "connecting from the TIME_WAIT port"))
    result: Cell
    got: Cell = False
    try:
        if method == "bind_connect":
            s.bind(ctx.host.sockaddr(old.cport))
        s.connect((ctx.host.address, old.port))
    except OSError as exc:
        lab.close(s)
        result = oserror_name(exc)
    else:
        result = "ok"
        got = s.getsockname()[1] == old.cport
        _finish_connection(ctx, tw, s)
    after = _tw_count(ctx, old)
    ts = bool(old.timestamps)
    if before == 0:
        rule: Cell = NA(f"no TIME_WAIT held the 4-tuple: {no_tw_reason(st.max_tw_buckets)}")
        why = (
            f"{no_tw_reason(st.max_tw_buckets)}: the port was free, connect() {result} "
            "without taking anything over"
        )
    else:
        if method == "pinned_range":
            takes, reason = connect_reuse(
                st.tw_reuse, st.tw_reuse_delay_ms, ts, st.loopback, age_ms
            )
        else:
            takes, reason = bind_connect_takeover(ts)
        rule = "takes over" if takes else "refused"
        if result == "ok" and takes:
            why = f"took the TIME_WAIT's 4-tuple over: {reason}"
        elif result != "ok" and not takes:
            why = f"{result}: {reason}"
        else:
            why = f"{result}, against the kernel's rule as sockprobe reads it ({reason})"
    return Attempt(
        label,
        method,
        round(age_ms / 1000, 3),
        before,
        ts if old.timestamps is not None else NA("TCP_INFO tcpi_options not available"),
        result,
        got,
        after,
        rule,
        why,
    )


def start(ctx: Ctx) -> TwReuse:
    """A client-first close leaves TIME_WAIT on the client's port; reconnect from that
    port at once, by the kernel's choice and by an explicit bind()."""
    tw = TwReuse()
    if not kernel.IS_LINUX:
        tw.na = NA(NO_PROC)
        return tw
    lab = ctx.lab
    tw.listener = lab.listener(backlog=4, role="tcp_tw_reuse listener")
    probe = lab.open_socket()
    try:
        reuse.pin_local_port_range(probe, 1024)
    except OSError as exc:
        tw.na = NA(f"IP_LOCAL_PORT_RANGE (Linux 6.3+) unavailable: {oserror_name(exc)}")
    lab.close(probe)
    if tw.na is None:
        tw.pinned = _client_first_close(ctx, tw, "tcp_tw_reuse client (closes first)", False)
        tw.attempts.append(_attempt(ctx, tw, tw.pinned, "at_once", "pinned_range"))
    bound = _client_first_close(ctx, tw, "bind+connect client (closes first)", True)
    tw.attempts.append(_attempt(ctx, tw, bound, "at_once", "bind_connect"))
    return tw


def finish(ctx: Ctx, tw: TwReuse) -> None:
    """Try the pinned connect again once the TIME_WAIT is older than tcp_tw_reuse_delay
    (1000 ms where the sysctl is absent: older kernels compare timestamps in whole
    seconds). With reuse on, retry for a further second in case the kernel rounds; with
    it off, one try says it."""
    if tw.listener is None:
        return
    if tw.na is None:
        st = ctx.settings
        delay = (st.tw_reuse_delay_ms if st.tw_reuse_delay_ms is not None else 1000) / 1000
        first = tw.pinned.started + delay + 0.02
        on = st.tw_reuse == 1 or (st.tw_reuse == 2 and st.loopback)
        last = first + (1.0 if on else 0.0)
        while True:
            pause = first - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, ctx.deadline.timeout(None, "waiting for tcp_tw_reuse_delay")))
            a = _attempt(ctx, tw, tw.pinned, "after_delay", "pinned_range")
            if a.result == "ok" or time.monotonic() >= last:
                break
            first = time.monotonic() + 0.1
        tw.attempts.append(a)
    ctx.lab.close(tw.listener)


def table(report: Report, tw: TwReuse, s: Settings) -> None:
    t = report.table(
        "tw_reuse",
        "connect() from a port a client TIME_WAIT holds, to the same server",
        [
            col("attempt"),
            col("method"),
            col("after_s", "after TIME_WAIT began", "s", VOLATILE),
            col("tw_before", "TIME_WAIT before"),
            col("timestamps", "old conn. timestamps"),
            col("tcp_tw_reuse", "tcp_tw_reuse"),
            col("result"),
            col("got_port", "got that port"),
            col("tw_after", "TIME_WAIT after"),
            col("rule", "kernel rule"),
            col("why"),
        ],
        keys=["attempt", "method"],
    )
    rv = setting_cell(s.tw_reuse, "net.ipv4.tcp_tw_reuse")
    if tw.na is not None:
        t.add("-", "pinned_range", None, tw.na, tw.na, rv, tw.na, tw.na, tw.na, tw.na, tw.na.reason)
    for a in tw.attempts:
        t.add(
            a.attempt,
            a.method,
            a.after_s,
            a.tw_before,
            a.timestamps,
            rv,
            a.result,
            a.got_port,
            a.tw_after,
            a.rule,
            a.why,
        )


def findings(report: Report, tw: TwReuse, s: Settings) -> None:
    pinned = [a for a in tw.attempts if a.method == "pinned_range"]
    bound = [a for a in tw.attempts if a.method == "bind_connect"]
    if pinned:
        if all(a.tw_before == 0 for a in pinned):
            report.findings.append(
                f"tcp_tw_reuse = {s.tw_reuse} could not be shown: "
                f"{no_tw_reason(s.max_tw_buckets)}, so the pinned port was free and connect() "
                f"gave {', then '.join(str(a.result) for a in pinned)} without any reuse."
            )
        else:
            parts = [
                f"{a.result} {a.attempt.replace('_', ' ')} ({a.after_s:.2f} s)"
                if isinstance(a.after_s, float)
                else f"{a.result} {a.attempt.replace('_', ' ')}"
                for a in pinned
            ]
            report.findings.append(
                f"tcp_tw_reuse = {s.tw_reuse}, tcp_tw_reuse_delay = {s.tw_reuse_delay_ms} ms: "
                f"a connect() whose only allowed port was held by a TIME_WAIT to the same "
                f"server gave {', then '.join(parts)}; tcp_tw_reuse never affects bind()."
            )
    for a in bound:
        if a.tw_before == 0:
            report.findings.append(
                f"bind() + connect() from the port of a closed connection gave {a.result}, but "
                f"no TIME_WAIT held it ({no_tw_reason(s.max_tw_buckets)})."
            )
        else:
            # The why names only what this row measured: a takeover shows that
            # tcp_tw_reuse did not gate it; a refusal with an untimestamped old
            # connection shows tcp_twsk_unique()'s timestamp condition.
            takes, why = bind_connect_takeover(a.timestamps is True)
            if a.result == "ok" and takes:
                tail = ": tcp_tw_reuse does not gate an explicitly bound port"
            elif a.result != "ok" and not takes:
                tail = f": {why}"
            else:
                tail = ""
            report.findings.append(
                f"bind() + connect() from a port whose TIME_WAIT to the same server was "
                f"{a.after_s} s old gave {a.result} with tcp_tw_reuse = {s.tw_reuse} "
                f"(old connection used timestamps: {'yes' if a.timestamps is True else 'no'}; "
                f"TIME_WAIT after: {a.tw_after}){tail}."
            )
