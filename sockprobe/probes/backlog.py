"""sockprobe backlog: how many connections listen(n) really admits, and where the rest wait.

For each requested backlog, on a fresh listener that does not call accept() while it is
being measured:

1. Fire N non-blocking connects from this process (default: the effective backlog + 8).
   On loopback the whole handshake usually runs inside connect() itself, so the queue
   fills one client at a time.
2. Settle: poll until every client is accounted for: ESTABLISHED (TCP_INFO tcpi_state,
   tcp(7)), refused (SO_ERROR ECONNREFUSED/ECONNRESET, socket(7)), or still in SYN_SENT
   with its SYN counted in the listener's own drop counter (sock_diag SK_MEMINFO_DROPS).
   That is exact, so the settle ends as soon as it is true; it is capped (`--settle`,
   below 1 s) so that no SYN has been retransmitted yet when the counters are read.
3. Read the listener as the kernel reports it: the accept-queue length and limit from
   sock_diag (what `ss -ltn` prints as Recv-Q and Send-Q), the LISTEN row's rx_queue in
   /proc/net/tcp[6], half-open requests, the listener's drops, and the host-wide TcpExt
   ListenOverflows and ListenDrops deltas (labelled host-wide: other traffic moves them).
4. accept() until the queue is empty and count what comes out (each accepted socket is
   closed at once: it has been counted, and keeping it would double the descriptors).
5. With `--retry-wait S`, keep accepting for S seconds and watch the clients that were
   left in SYN_SENT: when each SYN retransmission happened (tcpi_total_retrans grows),
   when the server's accept() returned each one (matched by address: a client that is
   ESTABLISHED on its own side may still be unknown to the server), and whether any was
   refused or gave up.

Every client is closed with SO_LINGER {1, 0} (an RST), so a run with thousands of
clients leaves no TIME_WAIT entries behind. A backlog up to somaxconn with more connects
than that needs more descriptors than the usual soft RLIMIT_NOFILE of 1024: the soft
limit is raised toward the hard limit for the run and put back afterwards.
"""

from __future__ import annotations

import errno
import math
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel.backlog import (
    CONNECT_PENDING,
    FdLimit,
    ListenerView,
    listener_view,
    open_fds,
    raise_nofile,
    restore_nofile,
    so_error,
)
from sockprobe.kernel.sockstate import abortive_linger
from sockprobe.lab import Deadline, Lab, fmt_addr
from sockprobe.probes import ProbeParams, Stopwatch, plural, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import Unsupported, errno_name

DEFAULT_BACKLOGS = (0, 1, 8, 128)
#: Clients beyond the effective backlog by default: the queue admits one of them
#: (backlog + 1), the other seven are left waiting.
EXTRA = 8
#: The first SYN retransmission comes 1 s after connect() (the initial RTO, RFC 6298),
#: so counters read within this window count every dropped SYN exactly once.
FIRST_RETRANSMIT_S = 1.0
MAX_BACKLOG = 2**31 - 1  # listen(2) takes a C int
MAX_CONNECTS = 100_000
#: Descriptors kept free for everything else the process has open (netlink sockets,
#: the listener, files read from /proc).
FD_HEADROOM = 32
POLL_S = 0.005
#: Without sock_diag's drop counter, counts unchanged this long are taken as final.
STABLE_S = 0.05

SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
)
SETTING_ROLES = {
    "net.core.somaxconn": "listen() silently clamps the backlog to this (listen(2))",
    "net.ipv4.tcp_max_syn_backlog": "bounds half-open requests, only with syncookies off",
    "net.ipv4.tcp_syncookies": "1: cookies when the half-open queue overflows; 2: always",
    "net.ipv4.tcp_abort_on_overflow": "1: RST a final ACK that finds the accept queue full",
    "net.ipv4.tcp_syn_retries": "connect()'s time budget: what this many doubling SYN "
    "timeouts take (the default 6: 127 s)",
    "net.ipv4.tcp_syn_linear_timeouts": "SYN timeouts kept at the initial 1 s after the "
    "first one, before doubling",
}

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
RESET_ERRNOS = (errno.ECONNREFUSED, errno.ECONNRESET)
RESET_NAMES = frozenset(errno.errorcode[e] for e in RESET_ERRNOS)
RETRY_COLUMNS = [
    "requested backlog",
    "left in SYN_SENT",
    "got in (accepted)",
    "accepted at",
    "SYN retransmissions needed",
    "SYN retransmissions seen at (median)",
    "ESTABLISHED on client side only",
    "refused (RST)",
    "timed out",
    "still SYN_SENT",
    "accepted during wait",
    "listener drops Δ (sk_drops)",
    "SyncookiesSent Δ (host-wide)",
]


@dataclass(frozen=True)
class Params(ProbeParams):
    backlogs: tuple[int, ...] = DEFAULT_BACKLOGS
    #: Connects per backlog; None: the effective backlog + 8.
    connects: int | None = None
    #: Seconds to keep accepting and watch the clients left in SYN_SENT (0: off).
    retry_wait: float = 0.0
    #: The most to wait for the handshakes to finish before counting.
    settle: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.backlogs) > 0, "--backlog: give at least one backlog")
        for b in self.backlogs:
            require(
                isinstance(b, int) and 0 <= b <= MAX_BACKLOG,
                f"--backlog must be 0..{MAX_BACKLOG}, not {b}",
            )
        if self.connects is not None:
            require(
                1 <= self.connects <= MAX_CONNECTS,
                f"--connects must be 1..{MAX_CONNECTS}, not {self.connects}",
            )
        require(
            math.isfinite(self.retry_wait) and 0 <= self.retry_wait <= 600,
            f"--retry-wait must be 0..600 seconds, not {self.retry_wait}",
        )
        require(
            math.isfinite(self.settle) and 0.01 <= self.settle < FIRST_RETRANSMIT_S,
            f"--settle must be at least 0.01 and below {FIRST_RETRANSMIT_S:g} s (the first "
            f"SYN retransmission would be counted again), not {self.settle}",
        )
        worst = len(self.backlogs) * self.retry_wait
        require(
            worst < self.deadline,
            f"--retry-wait {self.retry_wait:g} s for {len(self.backlogs)} backlog(s) takes "
            f"{worst:g} s: raise --deadline (now {self.deadline:g} s)",
        )


# -- one client ------------------------------------------------------------------------------
@dataclass
class Client:
    sock: socket.socket
    t0: float
    #: errno of connect() itself when it failed outright (not EINPROGRESS).
    connect_errno: int = 0
    #: The SO_ERROR value once seen (reading SO_ERROR clears it, so it is kept here).
    error: int = 0
    state: int | None = None
    #: tcpi_total_retrans last seen: SYN retransmissions so far, while in SYN_SENT.
    retrans: int = 0
    retrans_at: list[float] = field(default_factory=list)
    #: When the server's accept() returned this client's connection (s after connect()).
    accepted_s: float | None = None
    #: SYN retransmissions the client had made when the server accepted it.
    accepted_retrans: int = 0
    #: When the client itself was first seen ESTABLISHED during the retry wait.
    established_s: float | None = None
    #: Its class at the end of the settle (established, connecting, refused, other).
    cls: str = ""


def _errno_text(err: int) -> str:
    return errno_name(err) or ""


def _classify(c: Client) -> tuple[str, str]:
    """(class, detail) for one client, from TCP_INFO tcpi_state and SO_ERROR."""
    if c.connect_errno:
        return "other", f"connect() {_errno_text(c.connect_errno)}"
    info = kernel.tcp_info(c.sock)
    if info is not None:
        c.state = info.state
        _note_retrans(c, info, time.monotonic())
        if info.state == TCP_ESTABLISHED:
            return "established", ""
        if info.state == TCP_SYN_SENT and not c.error:
            return "connecting", ""
    if not c.error:
        c.error = so_error(c.sock)
    if info is None and not c.error:
        # No TCP_INFO here: a connected socket has a peer address, a pending one not.
        try:
            c.sock.getpeername()
        except OSError:
            return "connecting", ""
        return "established", ""
    if c.error in RESET_ERRNOS:
        return "refused", _errno_text(c.error)
    if c.error:
        return "other", _errno_text(c.error)
    return "other", kernel.tcp_state_name(c.state or 0)


def _tally(clients: list[Client]) -> tuple[Counter[str], Counter[str]]:
    counts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    for c in clients:
        cls, detail = _classify(c)
        c.cls = cls
        counts[cls] += 1
        if cls in ("other", "refused") and detail:
            details[detail] += 1
    return counts, details


# -- one row -----------------------------------------------------------------------------------
@dataclass
class Plan:
    backlog: int
    effective: int | None
    connects: int
    asked: int


@dataclass
class Retry:
    waited_s: float
    pending: int
    #: Seconds after connect() at which accept() returned each client that got in.
    accepted_at: list[float]
    retrans_needed: list[int]
    #: k -> times (s after connect()) at which clients' k-th SYN retransmission was seen.
    retrans_at: dict[int, list[float]]
    #: ESTABLISHED on the client's side, never accepted by the server.
    client_only: int
    refused: int
    timed_out: int
    other: Counter[str]
    still: int
    accepted: int
    overflows: int | None
    cookies: int | None
    #: The listener's own drop counter over the wait (dropped SYNs and final ACKs).
    listener_drops: int | None


@dataclass
class Row:
    plan: Plan
    counts: Counter[str]
    details: Counter[str]
    view: ListenerView
    overflows: int | None
    listen_drops: int | None
    settle_s: float
    settled: bool
    accepted: int
    #: Of `accepted`, clients that were still in SYN_SENT when counted: their
    #: retransmitted SYN arrived while accept() was draining the queue.
    accepted_late: int
    #: SYN retransmissions the waiting clients had made when the counters were read.
    early_retrans: int
    #: From the first waiting client's connect() to the end of the drain (or its start).
    drain_s: float
    retry: Retry | None = None

    @property
    def backlog(self) -> int:
        return self.plan.backlog

    @property
    def effective(self) -> int | None:
        """The kernel's stored queue limit where sock_diag shows it, else computed."""
        return self.view.limit if self.view.limit is not None else self.plan.effective

    @property
    def queue(self) -> int | None:
        return self.view.queue if self.view.queue is not None else self.view.proc_queue


def _listen_counters() -> tuple[int | None, int | None]:
    tcpext = kernel.netstat_counters().get("TcpExt", {})
    return tcpext.get("ListenOverflows"), tcpext.get("ListenDrops")


def _delta(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else b - a


def _connect_all(lab: Lab, addr: tuple[object, ...], n: int) -> list[Client]:
    clients: list[Client] = []
    for i in range(n):
        if i % 256 == 0:
            lab.deadline.check(f"connecting client {i + 1} of {n}")
        s = lab.open_socket()
        abortive_linger(s)  # RST on close: thousands of clients leave no TIME_WAIT
        s.setblocking(False)
        t0 = time.monotonic()
        err = s.connect_ex(addr)
        clients.append(Client(s, t0, 0 if err in CONNECT_PENDING else err))
    return clients


def _complete(counts: Counter[str], view: ListenerView, stable_s: float) -> bool:
    """True once every client is accounted for: each one still in SYN_SENT has had its
    SYN dropped by the listener (its drop counter says so), and the accept queue holds
    every established client or is full. Without the drop counter (no sock_diag), the
    best available sign is that nothing has changed for STABLE_S."""
    queue = view.queue if view.queue is not None else view.proc_queue
    if view.drops is None:
        settled_clients = counts["connecting"] == 0 or stable_s >= STABLE_S
    else:
        settled_clients = counts["connecting"] <= view.drops
    queue_ok = (
        queue is None
        or queue >= counts["established"]
        or (view.limit is not None and queue > view.limit)
    )
    return settled_clients and queue_ok


def _settle(
    lst: socket.socket, clients: list[Client], cap: float, deadline: Deadline
) -> tuple[Counter[str], Counter[str], ListenerView, float, bool]:
    t0 = time.monotonic()
    end = t0 + deadline.timeout(cap, "waiting for the handshakes to finish")
    last: object = None
    since = t0
    while True:
        counts, details = _tally(clients)
        view = listener_view(lst, proc=False)
        if view.drops is None:
            view = listener_view(lst)  # no sock_diag: /proc is all there is
        now = time.monotonic()
        key = (sorted(counts.items()), view.queue, view.proc_queue)
        if key != last:
            last, since = key, now
        done = _complete(counts, view, now - since)
        if done or now >= end:
            # /proc is slow to read on a busy host, so it is read once, at the end.
            return counts, details, listener_view(lst), now - t0, done
        time.sleep(min(POLL_S, max(0.0, end - now)))


def _drain(lab: Lab, lst: socket.socket) -> list[tuple[object, ...]]:
    """accept() on the non-blocking listener until its queue is empty; return the peer
    address of each connection. Each accepted socket is closed at once with an RST: it
    has been counted, and keeping it would double the descriptors a large row needs."""
    peers: list[tuple[object, ...]] = []
    while True:
        try:
            conn, addr = lst.accept()
        except (BlockingIOError, InterruptedError):
            return peers
        except ConnectionAbortedError:
            continue  # reset while queued; accept(2) lists ECONNABORTED
        try:
            abortive_linger(conn)
        finally:
            conn.close()
        peers.append(tuple(addr[:2]))
        if len(peers) % 256 == 0:
            lab.deadline.check("accepting the queued connections")


def _cookie_counters() -> tuple[int | None, int | None]:
    tcpext = kernel.netstat_counters().get("TcpExt", {})
    return tcpext.get("ListenOverflows"), tcpext.get("SyncookiesSent")


def _note_retrans(c: Client, info: kernel.TcpInfo, now: float) -> None:
    """tcpi_total_retrans counts every retransmission (tcp(7)); before the handshake
    completes those are SYNs. Note when each new one was first seen."""
    while c.retrans < info.total_retrans:
        c.retrans += 1
        c.retrans_at.append(now - c.t0)


def _accept_known(
    lab: Lab, lst: socket.socket, by_addr: dict[tuple[object, ...], Client], pending: list[Client]
) -> int:
    """Accept what is queued; note when each watched client got in, and how many SYN
    retransmissions it had needed by then (its tcpi_total_retrans)."""
    peers = _drain(lab, lst)
    for peer in peers:
        c = by_addr.get(peer)
        if c is None or c.accepted_s is not None:
            continue
        now = time.monotonic()
        c.accepted_s = now - c.t0
        info = kernel.tcp_info(c.sock)
        if info is not None:
            _note_retrans(c, info, now)
        c.accepted_retrans = c.retrans
        if c in pending:
            pending.remove(c)
    return len(peers)


def _watch_retries(lab: Lab, lst: socket.socket, clients: list[Client], wait: float) -> Retry:
    """Keep accepting for `wait` seconds and follow the clients left in SYN_SENT.

    A client "got in" when the server's accept() returned its connection (matched by
    address), not when the client reached ESTABLISHED: a client can complete its side
    of the handshake while the server drops its final ACK (the accept queue was full
    when it came), and the client cannot tell until it sends.
    """
    waiting = [c for c in clients if c.cls == "connecting"]
    n_pending = len(waiting)
    by_addr = {c.sock.getsockname()[:2]: c for c in waiting}
    # Some may have got in already, while the first accept() drained the queue.
    pending = [c for c in waiting if c.accepted_s is None]
    before = _cookie_counters()
    drops_before = listener_view(lst, proc=False).drops
    t_start = time.monotonic()
    end = t_start + lab.deadline.timeout(wait, "watching SYN retransmissions")
    accepted = 0
    refused = timed_out = 0
    other: Counter[str] = Counter()
    while True:
        accepted += _accept_known(lab, lst, by_addr, pending)
        now = time.monotonic()
        for c in list(pending):
            info = kernel.tcp_info(c.sock)
            if info is not None:
                _note_retrans(c, info, now)
                if info.state == TCP_SYN_SENT:
                    continue
            cls, detail = _classify(c)
            if cls == "connecting":
                continue
            if cls == "established":
                # Still waiting for the server to accept it: keep it pending.
                if c.established_s is None:
                    c.established_s = now - c.t0
                continue
            pending.remove(c)
            if cls == "refused":
                refused += 1
            elif c.error == errno.ETIMEDOUT:
                timed_out += 1
            else:
                other[detail] += 1
        if not pending or now >= end:
            break
        # Polling thousands of clients takes time of its own: keep it to about half
        # of the wall clock.
        interval = max(0.01, 2 * (time.monotonic() - now))
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    if pending:
        # The wait ended early only if the deadline cut it: then the counts are partial.
        lab.deadline.check("watching SYN retransmissions")
    accepted += _accept_known(lab, lst, by_addr, pending)
    after = _cookie_counters()
    drops_after = listener_view(lst, proc=False).drops
    got_in = [c for c in by_addr.values() if c.accepted_s is not None]
    by_index: dict[int, list[float]] = {}
    for c in by_addr.values():
        for k, t in enumerate(c.retrans_at, start=1):
            by_index.setdefault(k, []).append(t)
    client_only = sum(1 for c in pending if c.established_s is not None)
    return Retry(
        waited_s=time.monotonic() - t_start,
        pending=n_pending,
        accepted_at=sorted(c.accepted_s for c in got_in if c.accepted_s is not None),
        retrans_needed=sorted(c.accepted_retrans for c in got_in),
        retrans_at=by_index,
        client_only=client_only,
        refused=refused,
        timed_out=timed_out,
        other=other,
        still=len(pending) - client_only,
        accepted=accepted,
        overflows=_delta(before[0], after[0]),
        cookies=_delta(before[1], after[1]),
        listener_drops=_delta(drops_before, drops_after),
    )


def _measure(lab: Lab, plan: Plan, p: Params) -> Row:
    lst = lab.listener(backlog=plan.backlog, role=f"listener, listen({plan.backlog})")
    addr = lst.getsockname()
    lab.endpoints.append(
        {
            "role": f"{plan.connects} clients of listen({plan.backlog})",
            "local": f"{lab.host.address} (ephemeral ports)",
            "remote": fmt_addr(addr),
            "proto": "tcp",
        }
    )
    before = _listen_counters()
    clients = _connect_all(lab, addr, plan.connects)
    counts, details, view, settle_s, settled = _settle(lst, clients, p.settle, lab.deadline)
    after = _listen_counters()
    # SYN retransmissions made before the counters were read (a slow connect loop or
    # settle on a loaded host): the drop counters then include them.
    early = sum(c.retrans for c in clients if c.cls == "connecting")
    lst.setblocking(False)
    by_addr = {c.sock.getsockname()[:2]: c for c in clients}
    t_accept = time.monotonic()
    peers = _drain(lab, lst)
    # accept() pops queued connections, but a waiting client whose retransmitted SYN
    # arrives while the queue is being drained gets in too: tell them apart by address.
    late = 0
    for peer in peers:
        c = by_addr.get(peer)
        if c is not None and c.cls == "connecting":
            late += 1
            c.accepted_s = time.monotonic() - c.t0
            c.accepted_retrans = c.retrans
    first_drop = min((c.t0 for c in clients if c.cls == "connecting"), default=t_accept)
    retry = _watch_retries(lab, lst, clients, p.retry_wait) if p.retry_wait > 0 else None
    return Row(
        plan=plan,
        counts=counts,
        details=details,
        view=view,
        overflows=_delta(before[0], after[0]),
        listen_drops=_delta(before[1], after[1]),
        settle_s=settle_s,
        settled=settled,
        accepted=len(peers),
        accepted_late=late,
        early_retrans=early,
        drain_s=time.monotonic() - first_drop if late else t_accept - first_drop,
        retry=retry,
    )


# -- descriptors -----------------------------------------------------------------------------
def _fds_needed(plan: Plan) -> int:
    """Descriptors one row holds at its peak: every client (accepted connections are
    closed as soon as they are counted), plus headroom."""
    return plan.connects + FD_HEADROOM


def _fit(plans: list[Plan], lim: FdLimit, in_use: int) -> list[Plan]:
    """Cut each row's connects to what the descriptor limit allows."""
    if lim.soft is None:
        return plans
    cap = lim.soft - in_use - FD_HEADROOM
    if cap < 1:
        raise Unsupported(
            f"RLIMIT_NOFILE {lim.soft} (hard {lim.hard or 'unlimited'}) leaves no "
            f"descriptor for a client ({in_use} open already)"
        )
    return [p if p.connects <= cap else Plan(p.backlog, p.effective, cap, p.asked) for p in plans]


# -- the probe -----------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    settings = kernel.sysctls(SYSCTLS)
    report = Report("backlog", params=params_dict(params), environment=environment(settings))
    somaxconn = kernel.sysctl_int("net.core.somaxconn")
    plans = []
    for b in params.backlogs:
        eff = None if somaxconn is None else min(b, somaxconn)
        n = params.connects if params.connects is not None else (b if eff is None else eff) + EXTRA
        plans.append(Plan(b, eff, n, n))
    in_use = open_fds()
    lim = raise_nofile(in_use + max(_fds_needed(p) for p in plans))
    rows: list[Row] = []
    try:
        plans = _fit(plans, lim, in_use)
        for plan in plans:
            with Lab(host, deadline) as lab:
                rows.append(_measure(lab, plan, params))
                report.endpoints.extend(lab.endpoints)
    finally:
        restore_nofile(lim)
    _tables(report, params, rows, settings, host.is_v6)
    _findings(report, rows, somaxconn, settings, "tcp6" if host.is_v6 else "tcp")
    _fd_text(report, lim, plans)
    _notes(report)
    report.duration_s = watch()
    return report


# -- tables ----------------------------------------------------------------------------------------
def _times(values: list[float]) -> str:
    """[1.01, 1.02, 2.03] -> '1.0 x2, 2.0' (tenths of a second)."""
    if not values:
        return "-"
    groups = Counter(round(v, 1) for v in values)
    return ", ".join(f"{t:.1f} x{n}" if n > 1 else f"{t:.1f}" for t, n in sorted(groups.items()))


def _ints(values: list[int]) -> str:
    if not values:
        return "-"
    groups = Counter(values)
    return ", ".join(f"{v} x{n}" if n > 1 else f"{v}" for v, n in sorted(groups.items()))


def _schedule(retry: Retry) -> str:
    """Median time of the k-th SYN retransmission over the clients that made one."""
    if not retry.retrans_at:
        return "-"
    return ", ".join(f"{statistics.median(ts):.1f}" for _, ts in sorted(retry.retrans_at.items()))


def _na_none(value: int | None, reason: str) -> Cell:
    return NA(reason) if value is None else value


def _tables(
    report: Report, p: Params, rows: list[Row], settings: dict[str, Cell], v6: bool
) -> None:
    no_diag = next((r.view.diag_error for r in rows if r.view.diag_error), None)
    diag_reason = no_diag or "sock_diag did not report it"
    proto = "tcp6" if v6 else "tcp"
    t = legacy_table(
        report,
        "What listen(n) admitted: non-blocking connects, no accept() until counted",
        [
            "requested backlog",
            "effective backlog",
            "clamped",
            "connects",
            "established",
            "connecting (SYN_SENT)",
            "refused (RST)",
            "other",
            "accepted later",
        ],
    )
    for r in rows:
        eff = r.effective
        t.add(
            r.backlog,
            _na_none(eff, "net.core.somaxconn is not readable here"),
            None if eff is None else eff < r.backlog,
            r.plan.connects,
            r.counts["established"],
            r.counts["connecting"],
            r.counts["refused"],
            r.counts["other"],
            r.accepted,
        )
    lt = legacy_table(
        report,
        "The listener as the kernel reported it, within the settle window (before accept)",
        [
            "requested backlog",
            "accept queue (sock_diag Recv-Q)",
            "queue limit (sock_diag Send-Q)",
            f"rx_queue (/proc/net/{proto})",
            "half-open (SYN_RECV)",
            "listener drops (sk_drops)",
            "ListenOverflows Δ (host-wide)",
            "ListenDrops Δ (host-wide)",
            "settle",
        ],
        ["", "", "", "", "", "", "", "", "ms"],
        volatile=["half-open (SYN_RECV)", "listener drops (sk_drops)", "settle"],
        # Host-wide: other traffic and parallel runs move them, so diff never compares them.
        context=["ListenOverflows Δ (host-wide)", "ListenDrops Δ (host-wide)"],
    )
    no_counter = "/proc/net/netstat TcpExt is not readable here"
    for r in rows:
        lt.add(
            r.backlog,
            _na_none(r.view.queue, diag_reason),
            _na_none(r.view.limit, diag_reason),
            _na_none(r.view.proc_queue, f"no LISTEN row in /proc/net/{proto}"),
            _na_none(r.view.half_open, diag_reason),
            _na_none(r.view.drops, diag_reason),
            _na_none(r.overflows, no_counter),
            _na_none(r.listen_drops, no_counter),
            round(r.settle_s * 1000, 1),
        )
    if p.retry_wait > 0:
        rt = legacy_table(
            report,
            f"After accept(): the clients left in SYN_SENT, watched for {p.retry_wait:g} s "
            "while the server kept accepting",
            RETRY_COLUMNS,
            ["", "", "", "s after connect", "", "s after connect", "", "", "", "", "", "", ""],
            volatile=RETRY_COLUMNS[2:-1],
            context=RETRY_COLUMNS[-1:],  # SyncookiesSent is host-wide
        )
        for r in rows:
            if r.retry is None:
                continue
            rr = r.retry
            rt.add(
                r.backlog,
                rr.pending,
                len(rr.accepted_at),
                _times(rr.accepted_at),
                _ints(rr.retrans_needed),
                _schedule(rr),
                rr.client_only,
                rr.refused,
                rr.timed_out,
                rr.still,
                rr.accepted,
                _na_none(rr.listener_drops, diag_reason),
                _na_none(rr.cookies, no_counter),
            )
    st = legacy_table(
        report, "Kernel settings (per network namespace)", ["setting", "value", "what it does here"]
    )
    for name in SYSCTLS:
        st.add(name, settings.get(name), SETTING_ROLES[name])


# -- findings ------------------------------------------------------------------------------------
def _admitted(r: Row, somaxconn: int | None) -> str:
    est = r.counts["established"]
    text = f"listen({r.backlog}) admitted {est} of {plural(r.plan.connects, 'connect')}"
    eff = r.effective
    if eff is not None and est == eff + 1:
        if eff < r.backlog:
            text += f" (somaxconn {somaxconn if somaxconn is not None else eff} + 1)"
        else:
            text += " (backlog + 1)"
    parts = []
    waiting = r.counts["connecting"]
    if waiting:
        drops = (
            f" ({r.view.drops} drops counted on the listener)" if r.view.drops is not None else ""
        )
        parts.append(
            f"the other {plural(waiting, 'SYN')} were dropped{drops}: those clients sat "
            f"in SYN_SENT, due to retransmit {FIRST_RETRANSMIT_S:g} s after connect()"
        )
    if r.counts["refused"]:
        why = ", ".join(f"{k} x{v}" for k, v in r.details.items() if k in RESET_NAMES)
        parts.append(f"{r.counts['refused']} refused ({why})")
    if r.counts["other"]:
        why = ", ".join(f"{k} x{v}" for k, v in r.details.items() if k not in RESET_NAMES)
        parts.append(f"{r.counts['other']} ended otherwise ({why})")
    if not r.settled:
        parts.append(
            f"(not every client was accounted for after the {r.settle_s * 1000:.0f} ms settle)"
        )
    return text + ("; " + "; ".join(parts) if parts else "") + "."


def _findings(
    report: Report,
    rows: list[Row],
    somaxconn: int | None,
    settings: dict[str, Cell],
    proto: str,
) -> None:
    for r in rows:
        report.findings.append(_admitted(r, somaxconn))
    for r in rows:
        eff = r.effective
        if eff is not None and eff < r.backlog:
            report.findings.append(
                f"listen({r.backlog}) was clamped without an error: net.core.somaxconn is "
                f"{somaxconn}, and the kernel stored a queue limit of {eff}."
            )
        if (
            r.plan.effective is not None
            and r.view.limit is not None
            and r.plan.effective != r.view.limit
        ):
            report.findings.append(
                f"listen({r.backlog}): sock_diag shows a queue limit of {r.view.limit}, "
                f"not min(backlog, somaxconn) = {r.plan.effective}."
            )
    # The accept queue as the kernel reports it, against the clients and accept().
    agree = [
        r.queue == r.counts["established"] == r.accepted
        and (r.view.proc_queue is None or r.view.proc_queue == r.queue)
        for r in rows
    ]
    if rows and all(agree):
        report.findings.append(
            "In every row the listener's accept queue as the kernel reported it "
            "(" + _queue_sources(rows[0], proto) + ") equalled the number of established clients, "
            "and accept() then returned exactly that many: "
            + ", ".join(f"{r.queue} for listen({r.backlog})" for r in rows)
            + "."
        )
    else:
        for r, ok in zip(rows, agree):
            if ok:
                continue
            queued = r.accepted - r.accepted_late
            if r.accepted_late and r.queue == r.counts["established"] == queued:
                report.findings.append(
                    f"listen({r.backlog}): accept() returned {r.accepted}: the {queued} "
                    f"queued connections (what the kernel reported) and "
                    f"{r.accepted_late} waiting client(s) whose retransmitted SYN arrived "
                    f"while accept() was draining the queue, {r.drain_s:.1f} s after the "
                    "first waiting client's connect()."
                )
                continue
            report.findings.append(
                f"listen({r.backlog}): {r.counts['established']} clients established, the "
                f"kernel reported an accept queue of {_q(r.view.queue)} (sock_diag) and "
                f"{_q(r.view.proc_queue)} (/proc), and accept() returned {r.accepted}."
            )
    if (
        rows
        and all(r.view.half_open == 0 for r in rows)
        and any(r.counts["connecting"] for r in rows)
    ):
        report.findings.append(
            "The server held no half-open (SYN_RECV) request for any waiting client: a "
            "dropped SYN leaves no state on the server, only the drop counters."
        )
    for r in rows:
        if r.early_retrans:
            report.findings.append(
                f"listen({r.backlog}): the waiting clients had already retransmitted "
                f"{plural(r.early_retrans, 'SYN')} when the counters were read (the "
                f"connects and the settle took over {FIRST_RETRANSMIT_S:g} s on this "
                "host), so its drop counters count those again."
            )
    ov = [r.overflows for r in rows]
    dr = [r.listen_drops for r in rows]
    own = [r.view.drops for r in rows]
    if all(v is not None for v in ov + dr):
        own_text = (
            f"; this run's listeners counted {sum(v for v in own if v is not None)} drops "
            "themselves"
            if all(v is not None for v in own)
            else ""
        )
        report.findings.append(
            f"Host-wide, TcpExt ListenOverflows rose by {sum(v for v in ov if v is not None)} "
            f"and ListenDrops by {sum(v for v in dr if v is not None)} over the settle "
            f"window{'s' if len(rows) > 1 else ''} of {plural(len(rows), 'row')}{own_text} "
            "(other traffic in this network namespace moves the host-wide counters too, and "
            "each retransmitted SYN counts again)."
        )
    abort = settings.get("net.ipv4.tcp_abort_on_overflow")
    waiting = sum(r.counts["connecting"] for r in rows)
    refused = sum(r.counts["refused"] for r in rows)
    if abort == 1:
        text = (
            f"net.ipv4.tcp_abort_on_overflow is 1 here, yet {waiting} client(s) were left "
            f"in SYN_SENT and {refused} refused: a SYN that meets a full accept queue is "
            "dropped before any handshake, so there is no connection to abort."
        )
        retried = [r.retry for r in rows if r.retry is not None]
        client_only = sum(rr.client_only for rr in retried)
        if client_only:
            retry_refused = sum(rr.refused for rr in retried)
            cookies = [rr.cookies for rr in retried]
            cookie_text = (
                f" (SyncookiesSent rose by {sum(c for c in cookies if c is not None)} "
                "host-wide: their SYN-ACKs were SYN cookies)"
                if all(c is not None for c in cookies)
                and sum(c for c in cookies if c is not None) >= client_only
                else ""
            )
            text += (
                f" During the retry wait, {client_only} client(s) whose final ACK was "
                f"dropped stayed ESTABLISHED on their side and {retry_refused} were "
                f"refused: the listener kept no half-open request for them{cookie_text}, "
                "so there was nothing to reset either."
            )
        report.findings.append(text)
    for r in rows:
        if r.retry is not None:
            report.findings.append(_retry_text(r))
    est = [r.counts["established"] for r in rows]
    head = ", ".join(
        f"listen({r.backlog}) admitted {e}" if i == 0 else f"listen({r.backlog}) {e}"
        for i, (r, e) in enumerate(zip(rows, est))
    )
    plus_one = all(r.effective is not None and e == r.effective + 1 for r, e in zip(rows, est))
    report.summary = (
        head
        + (" (effective backlog + 1)" if plus_one else "")
        + f"; {waiting} other client(s) left in SYN_SENT, {refused} refused"
    )


def _q(v: int | None) -> str:
    return "n/a" if v is None else str(v)


def _queue_sources(r: Row, proto: str) -> str:
    src = []
    if r.view.queue is not None:
        src.append("sock_diag Recv-Q")
    if r.view.proc_queue is not None:
        src.append(f"/proc/net/{proto} rx_queue")
    return " and ".join(src) or "n/a"


def _retry_text(r: Row) -> str:
    rr = r.retry
    assert rr is not None
    if rr.pending == 0:
        return f"listen({r.backlog}): no client was left in SYN_SENT to watch."
    text = (
        f"listen({r.backlog}): after accept() emptied the queue and went on accepting, "
        f"{len(rr.accepted_at)} of the {rr.pending} clients left in SYN_SENT got in through "
        f"SYN retransmission during the {rr.waited_s:.1f} s wait"
    )
    if rr.accepted_at:
        text += (
            f" (accepted at {_times(rr.accepted_at)} s after connect(), after "
            f"{_ints(rr.retrans_needed)} SYN retransmission(s))"
        )
    text += f"; {rr.still} still in SYN_SENT, {rr.refused} refused, {rr.timed_out} timed out"
    if rr.other:
        text += ", " + ", ".join(f"{k} x{v}" for k, v in rr.other.items())
    if rr.retrans_at:
        text += f"; SYN retransmissions were seen at {_schedule(rr)} s after connect()"
    text += "."
    if rr.client_only:
        them = "it" if rr.client_only == 1 else "them"
        text += (
            f" {plural(rr.client_only, 'client')} reached ESTABLISHED on the client side, "
            f"yet the server never accepted {them}"
        )
        if rr.listener_drops is not None and rr.listener_drops >= rr.client_only:
            text += (
                f": their SYNs were answered, and the listener counted {rr.listener_drops} "
                "drops during the wait, which leaves their final ACKs as the dropped packets"
            )
        host_wide = []
        if rr.cookies is not None:
            host_wide.append(f"SyncookiesSent rose by {rr.cookies}")
        if rr.overflows is not None:
            host_wide.append(f"ListenOverflows by {rr.overflows}")
        text += (" (host-wide, " + " and ".join(host_wide) + ")" if host_wide else "") + "."
    return text


def _fd_text(report: Report, lim: FdLimit, plans: list[Plan]) -> None:
    cut = [p for p in plans if p.connects < p.asked]
    if lim.raised_from is not None:
        report.notes.append(
            f"RLIMIT_NOFILE: the soft limit was raised from {lim.raised_from} to {lim.soft} "
            f"for this run (hard limit {lim.hard or 'unlimited'}) and restored afterwards."
        )
    if cut:
        hard = lim.hard if lim.hard is not None else "unlimited"
        for p in cut:
            report.findings.append(
                f"RLIMIT_NOFILE is too low for listen({p.backlog}) with {p.asked} connects "
                f"(soft {lim.soft}, hard {hard}; every client is a descriptor): ran "
                f"{p.connects} connects instead"
                + (
                    ", too few to fill its accept queue"
                    if p.effective is not None and p.connects <= p.effective + 1
                    else ""
                )
                + ". Raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service) to "
                "run the full sweep."
            )
    if lim.error:
        report.notes.append(f"Raising RLIMIT_NOFILE failed: {lim.error}.")


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "Two queues (listen(2), tcp(7)): a SYN creates a half-open request (SYN_RECV); "
            "the final ACK turns it into a complete connection in the accept queue, which "
            "accept() pops. The backlog is the accept queue's limit, clamped to "
            "net.core.somaxconn; Linux declares it full only when it holds more than the "
            "limit, so it admits backlog + 1.",
            "Why extra clients hang instead of being refused: when the accept queue is full "
            "the listener drops an incoming SYN without answering (it counts in the "
            "listener's sk_drops, TcpExt ListenOverflows and ListenDrops). The client "
            "cannot tell a drop from loss, so it retransmits the SYN: after the initial 1 s "
            "timeout, net.ipv4.tcp_syn_linear_timeouts more timeouts of 1 s (on kernels that "
            "have it), then doubling ones. It gives up when the time that "
            "net.ipv4.tcp_syn_retries doubling timeouts would take has passed, so the linear "
            "ones add retransmissions, not time: with the defaults (6 and 4) SYNs go at 1, 2, "
            "3, 4, 5, 7, 11, 19, 35 and 67 s and a blocking connect() fails with ETIMEDOUT "
            "after about 131 s (ip-sysctl docs). Every retransmitted SYN that is dropped again "
            "counts again, so the counters keep growing while the per-client states do not: "
            "the client states are the primary result.",
            "Half-open requests are bounded by the same backlog: when they exceed it the "
            "listener answers with a SYN cookie (tcp_syncookies 1 or 2) or drops the SYN "
            "(0). net.ipv4.tcp_max_syn_backlog only matters with syncookies off: then a "
            "SYN from a peer the kernel has no record of is dropped once the request queue "
            "is three quarters full. On loopback the handshake completes inside connect(), "
            "so half-open requests hardly ever accumulate.",
            "Retransmitted SYNs of many waiting clients arrive together: the first ones "
            "become half-open requests, those beyond the backlog get SYN cookies (with "
            "tcp_syncookies 1). A cookie client reaches ESTABLISHED on its side, but when "
            "its final ACK meets a full accept queue the listener drops it, and the client "
            "learns nothing until it sends: its first data segment carries the ACK again "
            "and gets it in once the queue has room. --retry-wait shows such clients as "
            "'ESTABLISHED on client side only'.",
            "With net.ipv4.tcp_abort_on_overflow=1, a final ACK that completes a half-open "
            "request while the accept queue is full is answered with RST (the client, "
            "already ESTABLISHED, then sees ECONNRESET). It does not change what happens "
            "to a SYN that arrives while the queue is already full (that SYN is still "
            "dropped and the client hangs), nor to a final ACK carrying a SYN cookie (no "
            "request was kept, and it is dropped silently).",
            "Client states come from TCP_INFO tcpi_state (tcp(7)) and SO_ERROR (socket(7)); "
            "the listener's queue and limit from sock_diag (sock_diag(7), the idiag_rqueue "
            "and idiag_wqueue that `ss -ltn` prints as Recv-Q and Send-Q) and from the "
            "rx_queue of its LISTEN row in /proc/net/tcp[6]; its drops from "
            "SK_MEMINFO_DROPS (`ss -ltnm` shows them as d<n>). Clients are closed with "
            "SO_LINGER {1, 0}, an RST, so nothing is left in TIME_WAIT.",
            "Check it yourself while a run is held: ss -ltn 'sport = :PORT' (the listener "
            "ports are under Endpoints), ss -ltnm for the drops, "
            "nstat -az TcpExtListenOverflows TcpExtListenDrops, and tcpdump -i lo -nn "
            "'tcp port PORT and tcp[tcpflags] & tcp-syn != 0' to see the retransmitted SYNs.",
            "The settings are per network namespace: `unshare -n` or `ip netns` give a "
            "namespace with its own somaxconn and tcp_abort_on_overflow to try values in.",
            "macOS: kern.ipc.somaxconn (128 by default) caps the backlog, BSD stacks count "
            "the queue limit differently, and a SYN that finds the queue full is dropped "
            "as on Linux, so clients hang and retry; measure the admitted number there. "
            "Windows: listen(SOMAXCONN) lets the stack pick a large limit, and when the "
            "queue is full the stack refuses the connection, so the client gets "
            "WSAECONNREFUSED (10061) instead of hanging.",
        ]
    )
