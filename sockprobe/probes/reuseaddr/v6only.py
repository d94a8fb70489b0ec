"""IPV6_V6ONLY: a `[::]` socket with V6ONLY left at its default, 0 or 1, then a bind to
0.0.0.0 on the same port. ipv6(7): a dual-stack socket (V6ONLY 0) owns the IPv4 port as
well; net.ipv6.bindv6only is the default for new sockets."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from sockprobe.kernel import sockdiag
from sockprobe.lab import Lab
from sockprobe.probes.reuseaddr.common import Ctx, Settings, bind_any_port, inode, setting_cell
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name

SETTINGS: tuple[int | None, ...] = (None, 0, 1)


@dataclass
class V6Row:
    setting: int | None  # None: left at the default (net.ipv6.bindv6only)
    listening: bool
    effective: Cell
    diag_v6only: Cell
    bind: Cell


def _dual_stack_free_port(lab: Lab) -> int:
    """A port free for IPv4 and IPv6 alike, from a dual-stack [::] socket bound to port 0.

    Why not let the V6ONLY 1 socket pick its own port: the kernel then checks only IPv6
    sockets, so it may hand out a port that an IPv4 socket already holds, and the 0.0.0.0
    bind would fail for a reason that has nothing to do with V6ONLY (on a host with
    thousands of IPv4 connections, often). The probe socket is closed at once and the
    port bound again explicitly; nothing else can take it in between but a coincidence."""
    pick = lab.open_socket(family=socket.AF_INET6)
    try:
        pick.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        bind_any_port(pick, ("::", 0), lab.host)
        return int(pick.getsockname()[1])
    finally:
        lab.close(pick)


def measure(ctx: Ctx, setting: int | None, listen: bool) -> V6Row:
    lab = ctx.lab
    for attempt in range(5):
        port = 0
        wild: socket.socket | None = None
        try:
            port = _dual_stack_free_port(lab)
            wild = lab.open_socket(family=socket.AF_INET6)
            if setting is not None:
                wild.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, setting)
            wild.bind(("::", port))
            break
        except OSError as exc:
            if wild is not None:
                lab.close(wild)
            if exc.errno == errno.EADDRINUSE and attempt < 4:
                continue  # something took the port in between: pick another
            if exc.errno == errno.EADDRINUSE:
                na = NA("every [::] port tried was taken before the [::] socket could bind it")
            else:
                na = NA(f"no IPv6 here: {oserror_name(exc)}")
            return V6Row(setting, listen, na, na, na)
    assert wild is not None
    if listen:
        wild.listen(1)
    lab.record(f"[::] socket, IPV6_V6ONLY {'default' if setting is None else setting}", wild)
    effective: Cell = wild.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    diag: Cell
    try:
        # sock_diag reports INET_DIAG_SKV6ONLY for listening and bound-only sockets alike;
        # /proc/net/tcp6 shows a listener the same either way (and omits bound-only ones).
        ino = inode(wild)
        found = [
            d.v6only
            for d in sockdiag.dump(socket.AF_INET6, port=port, meminfo=False)
            if d.inode == ino
        ]
        diag = (
            found[0]
            if found and found[0] is not None
            else NA("sock_diag did not report this socket")
        )
    except OSError as exc:
        diag = NA(f"sock_diag unavailable: {oserror_name(exc)}")
    v4 = lab.open_socket(family=socket.AF_INET)
    try:
        v4.bind(("0.0.0.0", port))
        result: Cell = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(v4)
    lab.close(wild)
    return V6Row(setting, listen, effective, diag, result)


def why(r: V6Row, s: Settings) -> str:
    if isinstance(r.bind, NA):
        return r.bind.reason
    source = f"net.ipv6.bindv6only = {s.bindv6only}" if r.setting is None else "set"
    if r.bind == "EADDRINUSE" and r.effective == 0:
        return f"V6ONLY 0 ({source}): a dual-stack [::] socket owns the port on every IPv4 address"
    if r.bind == "ok" and r.effective == 1:
        return f"V6ONLY 1 ({source}): the [::] socket owns the port for IPv6 only"
    return f"bind gave {r.bind} with IPV6_V6ONLY {r.effective} ({source})"


def table(report: Report, rows: list[V6Row], s: Settings) -> None:
    t = report.table(
        "v6only",
        "IPV6_V6ONLY: a [::] socket on a fresh port, then bind 0.0.0.0 to the same port",
        [
            col("v6only_set", "IPV6_V6ONLY set"),
            col("bindv6only", "net.ipv6.bindv6only"),
            col("socket", "[::] socket"),
            col("v6only", "IPV6_V6ONLY (getsockopt)"),
            col("diag_v6only", "v6only (sock_diag)"),
            col("bind_v4_wildcard", "bind 0.0.0.0"),
            col("why"),
        ],
        keys=["v6only_set"],
    )
    for r in rows:
        t.add(
            "default" if r.setting is None else str(r.setting),
            setting_cell(s.bindv6only, "net.ipv6.bindv6only"),
            "listening" if r.listening else "bound",
            r.effective,
            r.diag_v6only,
            r.bind,
            why(r, s),
        )


def findings(report: Report, rows: list[V6Row]) -> None:
    by_setting = {r.setting: r for r in rows if not isinstance(r.bind, NA)}
    if not by_setting:
        return
    parts = []
    for s in SETTINGS:
        r = by_setting.get(s)
        if r is None:
            continue
        label = (
            f"IPV6_V6ONLY left at its default ({r.effective})" if s is None else f"IPV6_V6ONLY {s}"
        )
        parts.append(f"{r.bind} with {label}")
    what = "listening" if rows[0].listening else "bound"
    report.findings.append(
        f"A [::] socket ({what}), then bind 0.0.0.0 to its port: {'; '.join(parts)}."
    )
