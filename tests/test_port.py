"""sockprobe port on real sockets held by real processes: who holds a port, what a bind
does now, and the UNIX socket cases.

Holders run in child processes (so that owner resolution has another pid to find) and
are killed by their fixture; the suite's leak check fails a test that leaves one behind.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import labelled

from sockprobe import cli, fastport, kernel, port
from sockprobe.cli import main
from sockprobe.kernel import owners, portdiag

needs_linux = pytest.mark.skipif(not kernel.IS_LINUX, reason="sockprobe port is Linux-only")
pytestmark = needs_linux

MARK = "sockprobe-test-holder"

# A holder: opens the sockets named by argv[1], prints what it holds as one JSON line,
# then waits until its stdin closes (the fixture kills it anyway).
HOLDER = r"""
import json, socket, sys
kind = sys.argv[2]
keep = []
out = {}
def tcp(family=socket.AF_INET, addr="127.0.0.1", v6only=None, listen=True):
    s = socket.socket(family, socket.SOCK_STREAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, 0))
    if listen:
        s.listen(8)
    keep.append(s)
    return s
if kind == "listen":
    lst = tcp()
    out["port"] = lst.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", out["port"]), timeout=5)
    a, _ = lst.accept()
    keep += [c, a]
elif kind == "bound":
    out["port"] = tcp(listen=False).getsockname()[1]
elif kind == "bound-reuse":  # bound, not listening, with SO_REUSEADDR
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    keep.append(s)
    out["port"] = s.getsockname()[1]
elif kind == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    keep.append(u)
    out["port"] = u.getsockname()[1]
elif kind == "v6":
    out["dual"] = tcp(socket.AF_INET6, "::", 0).getsockname()[1]
    out["v6only"] = tcp(socket.AF_INET6, "::", 1).getsockname()[1]
elif kind == "wildcard":  # a listener on 0.0.0.0:<argv[3]> (run in another netns)
    s = socket.socket()
    s.bind(("0.0.0.0", int(sys.argv[3])))
    s.listen(8)
    keep.append(s)
    out["port"] = s.getsockname()[1]
elif kind == "unix":
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind(sys.argv[3])
    u.listen(8)
    keep.append(u)
elif kind == "unix-dgram":
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    u.bind(sys.argv[3])
    keep.append(u)
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, kind: str, *extra: str, prefix: tuple[str, ...] = ()) -> None:
        # The script comes through the environment so that the command line stays
        # short: `python -c <loader> sockprobe-test-holder KIND ...`.
        loader = "import os; exec(os.environ['HOLDER'])"
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", loader, MARK, kind, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HOLDER": HOLDER},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints once its sockets exist
        if not line:
            self.stop()
            raise RuntimeError(f"holder {kind} failed to start")
        self.info: dict[str, int] = json.loads(line)
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder() -> Iterator[Callable[..., Holder]]:
    started: list[Holder] = []

    def start(kind: str, *extra: str, prefix: tuple[str, ...] = ()) -> Holder:
        h = Holder(kind, *extra, prefix=prefix)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def can_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not can_ipv6(), reason="IPv6 is not available here")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["port", *args])
    out, err = capsys.readouterr()
    return code, out, err


def diagnose(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, *args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def rows(doc: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    table = next(t for t in doc["tables"] if t["title"].startswith(prefix))
    return labelled(table)


def trial(doc: dict[str, Any], proto: str, address: str) -> dict[str, Any]:
    return next(
        r for r in rows(doc, "Trial binds") if r["proto"] == proto and r["address"] == address
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing held a moment ago (an ephemeral bind, closed): other tests on this
    machine could take it meanwhile, as with CPython's find_unused_port()."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_state(p: int, state: int, present: bool = True, timeout: float = 5.0) -> None:
    """Poll sock_diag until a TCP socket in `state` is (or is no longer) on port p."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        socks = portdiag.diag_port(socket.AF_INET, socket.IPPROTO_TCP, p)
        if any(s.state == state for s in socks) == present:
            return
        time.sleep(0.01)
    raise AssertionError(f"port {p}: state {state} {'never came' if present else 'stayed'}")


# -- TCP holders --------------------------------------------------------------------------------
def test_listener_is_named_with_pid_command_line_and_user(capsys, holder):
    h = holder("listen")
    p = h.info["port"]
    code, doc = diagnose(capsys, str(p), "--check")
    assert code == 1  # --check: a plain bind on 0.0.0.0 fails now
    socks = rows(doc, "Sockets on port")
    assert socks[0]["state"] == "LISTEN"  # listeners first
    assert {r["state"] for r in socks} == {"LISTEN", "ESTABLISHED"}
    # Exact match: every row is on port p (the client's ephemeral end is elsewhere).
    assert all(r["local"] == f"127.0.0.1:{p}" for r in socks)
    assert len(socks) == 2
    full = Path(f"/proc/{h.pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
    for r in socks:
        assert r["pid"] == str(h.pid)
        assert r["command line"].startswith(sys.executable)
        assert full.decode().startswith(r["command line"].removesuffix("..."))
        assert r["user"] == owners.user_name(os.geteuid())
        assert 0 <= r["running for"] < 600
    assert f"pid {h.pid}" in doc["summary"]
    assert doc["findings"][0].startswith(f"LISTEN on tcp 127.0.0.1:{p} held by pid {h.pid}")
    # A listener on 127.0.0.1 conflicts with 0.0.0.0 and 127.0.0.1, even with
    # SO_REUSEADDR, but not with ::1 or a V6ONLY [::].
    for addr in ("0.0.0.0", "127.0.0.1"):
        assert trial(doc, "tcp", f"{addr}:{p}") == {
            "proto": "tcp",
            "address": f"{addr}:{p}",
            "plain bind": "EADDRINUSE",
            "with SO_REUSEADDR": "EADDRINUSE",
        }
    if can_ipv6():  # a dual-stack [::] would take 127.0.0.1 too; a V6ONLY one would not
        assert trial(doc, "tcp", f"[::]:{p} dual-stack")["plain bind"] == "EADDRINUSE"
        assert trial(doc, "tcp", f"[::]:{p} IPV6_V6ONLY")["plain bind"] == "ok"
    assert trial(doc, "udp", f"0.0.0.0:{p}")["plain bind"] == "ok"  # UDP ports are separate


def test_listener_on_127_0_0_1_does_not_conflict_with_127_0_0_2(capsys, holder):
    h = holder("listen")
    p = h.info["port"]
    _, doc = diagnose(capsys, str(p), "--tcp", "--host", "127.0.0.2")
    assert trial(doc, "tcp", f"127.0.0.2:{p}")["plain bind"] == "ok"
    assert trial(doc, "tcp", f"0.0.0.0:{p}")["plain bind"] == "EADDRINUSE"


def test_exact_port_match(capsys, holder):
    h = holder("listen")
    p = h.info["port"]
    # A port whose digits are a suffix of p's (8080 must never match 18080).
    other = int(str(p)[1:]) or 1
    _, doc = diagnose(capsys, str(other), "--tcp")
    assert not [r for r in rows(doc, "Sockets on port") if r["local"].endswith(f":{p}")]


def test_bound_not_listening_socket_is_found_where_proc_and_ss_miss_it(capsys, holder):
    h = holder("bound")
    p = h.info["port"]
    # The kernel truth: /proc/net/tcp has no row for it...
    assert kernel.proc_net_sockets("tcp", p) == []
    if shutil.which("ss"):
        ss = subprocess.run(
            ["ss", "-Htan", f"sport = :{p}"], capture_output=True, text=True, timeout=10
        )
        assert ss.stdout.strip() == ""  # ...nor does ss...
    # ...yet a bind fails, and sock_diag's bound-inactive dump reports it as state 7.
    code, doc = diagnose(capsys, str(p), "--tcp", "--check")
    assert code == 1
    (row,) = rows(doc, "Sockets on port")
    assert row["state"] == "BOUND-INACTIVE" and row["pid"] == str(h.pid)
    assert trial(doc, "tcp", f"0.0.0.0:{p}")["plain bind"] == "EADDRINUSE"
    assert "bound but not listening" in doc["findings"][0]
    assert "bound but not listening" in doc["summary"]
    # listen() would not free the port: the fix names closing the socket.
    assert "close the socket" in doc["findings"][0]
    assert "SO_REUSEADDR succeeds" not in doc["findings"][0]


def test_bound_socket_that_set_reuseaddr_lets_a_reuseaddr_bind_through(capsys, holder):
    """Both set SO_REUSEADDR, neither listens: the bind works, and the finding warns that
    only the first of the two to call listen() gets the port (measured in test below)."""
    h = holder("bound-reuse")
    p = h.info["port"]
    _, doc = diagnose(capsys, str(p), "--tcp")
    t = trial(doc, "tcp", f"0.0.0.0:{p}")
    assert (t["plain bind"], t["with SO_REUSEADDR"]) == ("EADDRINUSE", "ok")
    assert "SO_REUSEADDR succeeds now" in doc["findings"][0]
    # The kernel truth behind the warning: a SO_REUSEADDR socket beside it binds and,
    # listening first, takes the port.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", p))
        s.listen(1)


@needs_ipv6
def test_dual_stack_and_v6only_listeners_are_told_apart(capsys, holder):
    h = holder("v6")
    dual, v6only = h.info["dual"], h.info["v6only"]
    # /proc/net/tcp6 cannot tell them apart: same address, state and columns.
    pd = kernel.proc_net_sockets("tcp6", dual)
    pv = kernel.proc_net_sockets("tcp6", v6only)
    assert [(r.local[0], r.state) for r in pd] == [(r.local[0], r.state) for r in pv]

    _, doc = diagnose(capsys, str(dual), "--tcp")
    (row,) = rows(doc, "Sockets on port")
    assert row["local"] == f"[::]:{dual}" and row["covers"] == "IPv4+IPv6"
    assert trial(doc, "tcp", f"0.0.0.0:{dual}")["plain bind"] == "EADDRINUSE"
    assert "dual-stack: it covers IPv4 too" in doc["findings"][0]

    _, doc = diagnose(capsys, str(v6only), "--tcp")
    (row,) = rows(doc, "Sockets on port")
    assert row["covers"] == "IPv6 only"
    assert trial(doc, "tcp", f"0.0.0.0:{v6only}")["plain bind"] == "ok"
    assert trial(doc, "tcp", f"[::]:{v6only} IPV6_V6ONLY")["plain bind"] == "EADDRINUSE"
    assert "IPV6_V6ONLY: IPv4 is not covered" in doc["findings"][0]


@pytest.mark.parametrize("old_reuse", [1, 0], ids=["old-set-SO_REUSEADDR", "old-did-not"])
def test_time_wait_only_and_the_reuseaddr_matrix(capsys, old_reuse):
    """Server closes first: TIME_WAIT sits on the server's port. A plain bind fails; one
    with SO_REUSEADDR succeeds only if the old socket had set it too (Linux)."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, old_reuse)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = lst.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", p), timeout=5)
    a, _ = lst.accept()
    a.close()  # the server closes first
    c.settimeout(5)
    assert c.recv(1) == b""
    c.close()
    lst.close()
    wait_for_state(p, 6)  # TIME_WAIT
    wait_for_state(p, 5, present=False)  # no FIN_WAIT2 left
    code, doc = diagnose(capsys, str(p), "--tcp", "--check")
    assert code == 1
    socks = rows(doc, "Sockets on port")
    assert socks and all(r["state"] == "TIME_WAIT" and r["pid"] is None for r in socks)
    assert "Only TIME_WAIT sockets remain" in doc["findings"][0]
    assert "SO_REUSEADDR" in doc["findings"][0] and "TIME_WAIT" in doc["summary"]
    t = trial(doc, "tcp", f"0.0.0.0:{p}")
    assert t["plain bind"] == "EADDRINUSE"
    assert t["with SO_REUSEADDR"] == ("ok" if old_reuse else "EADDRINUSE")
    assert ("had set it" if old_reuse else "had not set it") in doc["findings"][0]


@pytest.mark.parametrize("old_reuse", [1, 0], ids=["they-set-SO_REUSEADDR", "they-did-not"])
def test_connections_left_without_a_listener(capsys, old_reuse):
    """A server closed its listener but kept one accepted connection: a plain bind fails,
    one with SO_REUSEADDR works only if the connection has it (inherited from the
    listener)."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, old_reuse)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = lst.getsockname()[1]
    with socket.create_connection(("127.0.0.1", p), timeout=5):
        a, _ = lst.accept()
        lst.close()
        with a:
            _, doc = diagnose(capsys, str(p), "--tcp")
    t = trial(doc, "tcp", f"0.0.0.0:{p}")
    assert t["plain bind"] == "EADDRINUSE"
    assert t["with SO_REUSEADDR"] == ("ok" if old_reuse else "EADDRINUSE")
    (f,) = [f for f in doc["findings"] if f.startswith("No listener")]
    assert f"1 TCP connection still uses local port {p} (1 ESTABLISHED)" in f
    assert f"pid {os.getpid()}" in f
    assert ("set SO_REUSEADDR on the server" in f) == bool(old_reuse)


def test_orphaned_socket_is_owned_by_no_process(capsys):
    """The server closes while the client keeps its end open: the server's socket lives
    on in FIN_WAIT2 with no file (inode 0), and is not blamed on any process."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = lst.getsockname()[1]
    with socket.create_connection(("127.0.0.1", p), timeout=5) as c:
        a, _ = lst.accept()
        a.close()
        lst.close()
        c.settimeout(5)
        assert c.recv(1) == b""
        wait_for_state(p, 5)  # FIN_WAIT2
        _, doc = diagnose(capsys, str(p), "--tcp")
    (row,) = [r for r in rows(doc, "Sockets on port") if r["state"] == "FIN_WAIT2"]
    assert isinstance(row["pid"], dict) and "orphan" in row["pid"]["n/a"]
    assert any("held by no process" in f for f in doc["findings"])


def test_client_closed_first_leaves_the_server_port_free(capsys):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = lst.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", p), timeout=5)
    a, _ = lst.accept()
    c.close()  # the client closes first: TIME_WAIT goes to the client's port
    a.settimeout(5)
    assert a.recv(1) == b""
    a.close()
    lst.close()
    wait_for_state(p, 9, present=False)  # LAST_ACK gone
    code, doc = diagnose(capsys, str(p), "--tcp", "--check")
    assert code == 0
    assert trial(doc, "tcp", f"0.0.0.0:{p}")["plain bind"] == "ok"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"
)
def test_listener_in_another_network_namespace_is_not_blamed(capsys, holder):
    p = free_port()
    h = holder("wildcard", str(p), prefix=("unshare", "--net"))
    assert h.info["port"] == p  # it listens on p, in its own namespace
    code, doc = diagnose(capsys, str(p), "--tcp", "--check")
    assert code == 0, doc["findings"]
    # (A connection elsewhere on this busy host may have taken p as its source port
    # since; the netns listener itself must never appear.)
    assert [r for r in rows(doc, "Sockets on port") if r["state"] == "LISTEN"] == []
    assert not any("LISTEN" in f for f in doc["findings"])


# -- UDP, free ports, settings ------------------------------------------------------------------
def test_udp_socket_and_protocol_filters(capsys, holder):
    h = holder("udp")
    p = h.info["port"]
    # TCP connections elsewhere on the host may use the same number as their source
    # port (UDP and TCP ports are separate spaces), so TCP rows are not asserted on.
    _, doc = diagnose(capsys, str(p))
    udp = [r for r in rows(doc, "Sockets on port") if r["proto"].startswith("udp")]
    assert [(r["proto"], r["state"], r["pid"]) for r in udp] == [("udp", "UNCONN", str(h.pid))]
    assert trial(doc, "udp", f"0.0.0.0:{p}")["plain bind"] == "EADDRINUSE"
    assert any("blocks UDP binds only" in f for f in doc["findings"])

    _, doc = diagnose(capsys, str(p), "--tcp")
    assert all(r["proto"].startswith("tcp") for r in rows(doc, "Sockets on port"))
    assert {r["proto"] for r in rows(doc, "Trial binds")} == {"tcp"}
    code, doc = diagnose(capsys, str(p), "--udp", "--check")
    assert code == 1 and len(rows(doc, "Sockets on port")) == 1
    assert {r["proto"] for r in rows(doc, "Trial binds")} == {"udp"}


def test_free_port_is_reported_free(capsys):
    # Between free_port() and the diagnosis another process may take the port (as a
    # source port of a connection): then try another one.
    for _ in range(5):
        p = free_port()
        code, doc = diagnose(capsys, str(p), "--check")
        if not rows(doc, "Sockets on port"):
            break
    assert code == 0
    assert rows(doc, "Sockets on port") == []
    assert "free" in doc["summary"]
    assert doc["findings"][0].startswith(f"Port {p} is free (TCP and UDP)")
    assert all(r["plain bind"] == "ok" for r in rows(doc, "Trial binds"))


def test_port_settings_are_read_from_the_kernel(capsys):
    start = kernel.sysctl_int("net.ipv4.ip_unprivileged_port_start")
    lo, hi = (int(x) for x in (kernel.sysctl("net.ipv4.ip_local_port_range") or "1 0").split())
    p = free_port()  # an ephemeral port: inside ip_local_port_range
    _, doc = diagnose(capsys, str(p), "--tcp")
    settings = {r["setting"]: r for r in rows(doc, "Port ")}
    assert settings["net.ipv4.ip_unprivileged_port_start"]["value"] == str(start)
    assert settings["net.ipv4.ip_local_port_range"]["value"] == f"{lo}-{hi}"
    if lo <= p <= hi:
        assert any("inside ip_local_port_range" in f for f in doc["findings"])
    if start is not None and start > 1:
        _, doc = diagnose(capsys, "1", "--tcp")
        low = [f for f in doc["findings"] if "ip_unprivileged_port_start" in f]
        assert low and f"({start})" in low[0] and "CAP_NET_BIND_SERVICE" in low[0]


def test_port_list_parsing():
    assert portdiag.in_port_list("8080,9000-9010", 9005)
    assert portdiag.in_port_list("8080,9000-9010", 8080)
    assert not portdiag.in_port_list("8080,9000-9010", 8081)
    assert not portdiag.in_port_list("", 8080)


# -- UNIX socket paths --------------------------------------------------------------------------
def test_live_unix_socket_names_its_owner_and_is_left_working(capsys, holder, tmp_path):
    path = str(tmp_path / "live.sock")
    h = holder("unix", path)
    code, doc = diagnose(capsys, path, "--check")
    assert code == 1
    (row,) = rows(doc, "Sockets bound to")
    assert (row["state"], row["pid"]) == ("LISTEN", str(h.pid))
    trials = {r["operation"]: r["result"] for r in rows(doc, "Trials on")}
    assert trials["connect (stream, non-blocking)"] == "ok"
    assert trials["bind"] == "EADDRINUSE"
    assert trials["SO_PEERCRED of the listener"].startswith(f"pid {h.pid},")
    assert "live" in doc["summary"] and f"pid {h.pid}" in doc["summary"]
    # The trial bind touched nothing: the file is there and the server still accepts.
    assert os.path.exists(path)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)


def test_live_unix_datagram_socket_names_its_owner(capsys, holder, tmp_path):
    path = str(tmp_path / "dgram.sock")
    h = holder("unix-dgram", path)
    code, doc = diagnose(capsys, path, "--check")
    assert code == 1
    trials = {r["operation"]: r["result"] for r in rows(doc, "Trials on")}
    assert trials["connect (dgram, non-blocking)"] == "ok"
    assert f"pid {h.pid}" in doc["findings"][0] and "datagram socket" in doc["findings"][0]
    assert "dgram socket" in doc["summary"] and f"pid {h.pid}" in doc["summary"]


def test_stale_unix_socket_file_is_diagnosed_and_left_in_place(capsys, tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    s.close()  # close() does not remove the file: it is now stale
    code, doc = diagnose(capsys, path, "--check")
    assert code == 1
    trials = {r["operation"]: r["result"] for r in rows(doc, "Trials on")}
    assert trials["connect (stream, non-blocking)"] == "ECONNREFUSED"
    assert trials["bind"] == "EADDRINUSE"
    assert trials["bind with SO_REUSEADDR"] == "EADDRINUSE"
    assert "stale" in doc["summary"]
    assert f"rm {path}" in doc["findings"][0] and "abstract" in doc["findings"][0]
    assert os.path.exists(path)  # diagnosed, never removed


def test_missing_unix_path_is_free_and_not_created(capsys, tmp_path):
    path = str(tmp_path / "none.sock")
    code, doc = diagnose(capsys, path, "--check")
    assert code == 0 and "free" in doc["summary"]
    assert not os.path.exists(path)


def test_abstract_name(capsys, tmp_path):
    name = f"sockprobe-test-{os.getpid()}-{time.monotonic_ns()}"
    code, doc = diagnose(capsys, f"@{name}", "--check")
    assert code == 0 and "free" in doc["summary"]
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("\0" + name)
        s.listen(1)
        code, doc = diagnose(capsys, f"@{name}", "--check")
        assert code == 1
        (row,) = rows(doc, "Sockets bound to")
        assert row["state"] == "LISTEN" and row["pid"] == str(os.getpid())


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [["0"], ["70000"], ["abc"], ["-5"], ["/tmp/x.sock", "--tcp"], ["80", "--limit", "-1"]],
)
def test_bad_targets_exit_2_with_one_line(capsys, args):
    code, _out, err = run(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sockprobe:") and "Traceback" not in err


def test_fast_path_matches_the_typer_command(capsys, holder):
    """__main__ answers `sockprobe port` without typer when its arguments are plain; the
    two must agree on output and exit codes."""
    h = holder("listen")
    p = str(h.info["port"])
    for args in ([p, "--tcp", "--json", "--check"], [p, "--format", "csv"], ["abc"]):
        code_typer, out_typer, err_typer = run(capsys, *args)
        code_fast = fastport.fast_main(list(args))
        out_fast, err_fast = capsys.readouterr()
        assert code_fast == code_typer
        assert err_fast == err_typer
        if "--json" in args:
            a, b = json.loads(out_typer), json.loads(out_fast)
            for doc in (a, b):
                doc.pop("duration_s")
                for t in doc["tables"]:
                    for r in t["rows"]:
                        for i, col in enumerate(t["columns"]):
                            if col in t["volatile"]:
                                r[i] = None
                doc["findings"] = [f.split(" (user")[0] for f in doc["findings"]]
            assert a == b
        else:
            assert out_fast.splitlines()[:1] == out_typer.splitlines()[:1]
    for args in (["--help"], [p, "--no-such-option"], [p, "--deadline"], []):
        assert fastport.fast_main(list(args)) is None  # left to typer
    defaults = {k: v.default for k, v in inspect.signature(cli.port).parameters.items()}
    assert defaults["limit"] == fastport.DEFAULT_LIMIT
    assert defaults["deadline"] == fastport.DEFAULT_DEADLINE
    assert defaults["host"] == port.Params.__dataclass_fields__["host"].default


def test_subprocess_fast_path_and_check(holder):
    h = holder("listen")
    r = subprocess.run(
        [sys.executable, "-m", "sockprobe", "port", str(h.info["port"]), "--tcp", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert f"pid {h.pid}" in r.stdout and "Trial binds" in r.stdout


def test_deadline_bounds_the_command(capsys):
    code, _out, err = run(capsys, str(free_port()), "--deadline", "0.000001")
    assert code == 1 and "deadline" in err


# -- owners and fallbacks -----------------------------------------------------------------------
def test_owner_scan_finds_this_process_and_stops_early():
    with socket.socket() as s:
        inode = os.fstat(s.fileno()).st_ino
        found = owners.find_owners({inode})
        assert found.holders[inode] == (os.getpid(), s.fileno())
        me = found.processes[os.getpid()]
        assert me.cmdline and me.age_s is not None and me.age_s >= 0
    empty = owners.find_owners(set())
    assert empty.scanned_processes == 0  # no inode to resolve: no walk at all


def test_proc_fallback_when_sock_diag_is_refused(capsys, holder, monkeypatch):
    h = holder("listen")
    p = h.info["port"]

    def refused(*args: Any, **kwargs: Any) -> list[Any]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(portdiag, "diag_port", refused)
    _, doc = diagnose(capsys, str(p), "--tcp")
    socks = rows(doc, "Sockets on port")
    assert socks[0]["state"] == "LISTEN" and socks[0]["pid"] == str(h.pid)
    assert any("/proc/net/tcp instead" in f for f in doc["findings"])


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_not_root_owner_is_hidden_and_privileged_ports_say_how_to_bind(holder):
    h = holder("listen")
    p = str(h.info["port"])
    # The checkout may sit in a directory only root can enter (mktemp -d makes 0700 ones),
    # so the unprivileged child imports a world-readable copy of the package.
    shared = Path(tempfile.mkdtemp(prefix="sockprobe-nobody-"))

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
                "--inh-caps=-all",
                *(sys.executable, "-m", "sockprobe", "port", *args, "--json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={
                **os.environ,
                "PYTHONPATH": str(shared),
                "HOME": "/",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
        )

    start = kernel.sysctl_int("net.ipv4.ip_unprivileged_port_start")
    try:
        shutil.copytree(
            Path(port.__file__).resolve().parent,
            shared / "sockprobe",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for d, _, files in os.walk(shared):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        r = as_nobody(p, "--tcp")
        low = as_nobody("1", "--tcp") if start is not None and start > 1 else None
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if r.returncode != 0 and ("Permission denied" in r.stderr or "No module named" in r.stderr):
        pytest.skip(f"the unprivileged user cannot run this checkout: {r.stderr[-200:]}")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    row = rows(doc, "Sockets on port")[0]
    assert row["state"] == "LISTEN"
    assert isinstance(row["pid"], dict) and "run as root" in row["pid"]["n/a"]
    assert row["user"] == owners.user_name(0)  # the socket's uid, from sock_diag
    assert any("sudo sockprobe port" in f for f in doc["findings"])
    assert str(h.pid) not in r.stdout
    if low is not None:
        # Port 1 below ip_unprivileged_port_start, without CAP_NET_BIND_SERVICE: EACCES,
        # and the finding says how to get the capability.
        assert low.returncode == 0, low.stderr
        doc = json.loads(low.stdout)
        assert trial(doc, "tcp", "0.0.0.0:1")["plain bind"] == "EACCES"
        assert "privileged port" in doc["summary"]
        (f,) = [f for f in doc["findings"] if "ip_unprivileged_port_start" in f]
        assert "lacks it" in f and "cap_net_bind_service" in f
