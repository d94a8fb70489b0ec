"""sockprobe port on real sockets held by real processes: every holder, who manages it,
what a bind does now, --wait, --kill, the target forms, other namespaces, hidden holders,
the UNIX socket cases.

Holders run in child processes (so that the fd walk has other pids to find) and stop when
their stdin closes; the fixture kills them, and the suite's leak check fails a test that
leaves one behind. Tests go through `run(Params(...))` and, for real process behaviour
(exit codes, stdin without a terminal), `python -m sockprobe.port`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sockprobe import kernel
from sockprobe.kernel import portdiag
from sockprobe.port import Params, PortResult, managers, processes, run
from sockprobe.port.params import parse_target
from sockprobe.status import UsageError

needs_linux = pytest.mark.skipif(not kernel.IS_LINUX, reason="sock_diag and /proc are Linux")
pytestmark = needs_linux
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
ROOT = Path(__file__).resolve().parent.parent
MARK = "sockprobe-test-holder"

# A holder: opens what argv[2] names, prints what it holds as one JSON line, then waits
# until its stdin closes. Children it starts wait on the same stdin, so they end with it.
HOLDER = r"""
import array, json, os, socket, subprocess, sys, time
kind = sys.argv[2]
keep = []
out = {}
def tcp(family=socket.AF_INET, addr="127.0.0.1", port=0, v6only=None, listen=True, reuse=0):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port))
    if listen:
        s.listen(8)
    keep.append(s)
    return s
WAIT = "import sys; sys.stdin.read()"
if kind == "listen":
    lst = tcp()
    out["port"] = lst.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", out["port"]), timeout=5)
    a, _ = lst.accept()
    keep += [c, a]
elif kind == "listen-on":  # a listener on 127.0.0.1:<argv[3]>
    out["port"] = tcp(port=int(sys.argv[3])).getsockname()[1]
elif kind == "client":  # a client connection to 127.0.0.1:<argv[3]>
    c = socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=5)
    keep.append(c)
    out["port"] = c.getsockname()[1]
elif kind == "fork":  # a pre-fork server: a forked worker and an exec'd child (pass_fds)
    lst = tcp(addr="0.0.0.0")
    out["port"] = lst.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        sys.stdin.read()
        os._exit(0)
    child = subprocess.Popen([sys.executable, "-c", WAIT], pass_fds=(lst.fileno(),))
    out["forked"], out["execd"] = pid, child.pid
elif kind == "scm":  # the listener's fd passed to an unrelated process over a UNIX socket
    lst = tcp()
    out["port"] = lst.getsockname()[1]
    a, b = socket.socketpair()
    recv = ("import array, socket, sys; s = socket.socket(fileno=int(sys.argv[1])); "
            "msg, anc, fl, ad = s.recvmsg(1, socket.CMSG_SPACE(4)); print(len(anc), flush=True); "
            "sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", recv, str(b.fileno())], pass_fds=(b.fileno(),),
                             stdout=subprocess.PIPE, text=True)
    b.close()
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [lst.fileno()]))])
    assert child.stdout.readline().strip() == "1"
    a.close()
    out["receiver"] = child.pid
elif kind == "bound":
    out["port"] = tcp(listen=False).getsockname()[1]
elif kind == "bound-reuse":
    out["port"] = tcp(listen=False, reuse=1).getsockname()[1]
elif kind == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    keep.append(u)
    out["port"] = u.getsockname()[1]
elif kind == "v6":
    out["dual"] = tcp(socket.AF_INET6, "::", v6only=0).getsockname()[1]
    out["v6only"] = tcp(socket.AF_INET6, "::", v6only=1).getsockname()[1]
elif kind == "wildcard":  # a listener on 0.0.0.0:<argv[3]> (run in another netns)
    out["port"] = tcp(addr="0.0.0.0", port=int(sys.argv[3])).getsockname()[1]
elif kind == "brief":  # a listener that closes (the process exits) after argv[3] s
    out["port"] = tcp().getsockname()[1]
    print(json.dumps(out), flush=True)
    time.sleep(float(sys.argv[3]))
    sys.exit(0)
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
    def __init__(
        self, kind: str, *extra: str, prefix: tuple[str, ...] = (), argv0: str = ""
    ) -> None:
        # The script comes through the environment so the command line stays short.
        loader = "import os; exec(os.environ['HOLDER'])"
        argv = [*prefix, sys.executable, "-c", loader, MARK, kind, *extra]
        if argv0:  # run it under another argv[0] (bash's exec -a), as a forwarder shows
            argv = ["bash", "-c", f'exec -a {argv0} "$@"', "_", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HOLDER": HOLDER},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"holder {kind} failed to start")
        self.info: dict[str, int] = json.loads(line)
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        # Its children wait on the same stdin: closed now, they exit.
        for pid in (self.info.get(k) for k in ("forked", "execd", "receiver")):
            if pid:
                _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.01)


@pytest.fixture
def holder() -> Iterator[Callable[..., Holder]]:
    started: list[Holder] = []

    def start(kind: str, *extra: str, **kw: Any) -> Holder:
        h = Holder(kind, *extra, **kw)
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


def port(target: str | int, **kw: Any) -> PortResult:
    return run(Params(target=str(target), **kw))


def module(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`python -m sockprobe.port ARGS` (stdin not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "sockprobe.port", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        **kw,
    )


def trial(r: PortResult, proto: str, address: str, v6: str = "") -> dict[str, Any]:
    return r.report.get("trials").find(proto=proto, address=address, ipv6_only=v6)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing held a moment ago (an ephemeral bind, closed)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_state(p: int, state: int, present: bool = True, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        socks = portdiag.diag_port(socket.AF_INET, socket.IPPROTO_TCP, p)
        if any(s.state == state for s in socks) == present:
            return
        time.sleep(0.01)
    raise AssertionError(f"port {p}: state {state} {'never came' if present else 'stayed'}")


def time_wait_port(reuse: int) -> int:
    """A port left with only a TIME_WAIT: the server (SO_REUSEADDR = reuse) closed first."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = int(lst.getsockname()[1])
    c = socket.create_connection(("127.0.0.1", p), timeout=5)
    a, _ = lst.accept()
    a.close()  # the server closes first: TIME_WAIT lands on its port
    c.settimeout(5)
    assert c.recv(1) == b""
    c.close()
    lst.close()
    wait_for_state(p, 6)
    wait_for_state(p, 5, present=False)
    return p


def ss_pids(p: int) -> set[int]:
    """The pids `ss -tlnp` lists for listeners on port p: the independent check."""
    out = subprocess.run(
        ["ss", "-Htlnp", f"sport = :{p}"], capture_output=True, text=True, timeout=10
    ).stdout
    import re

    return {int(x) for x in re.findall(r"pid=(\d+)", out)}


# -- every holder -----------------------------------------------------------------------------
def test_listener_is_named_with_pid_argv_user_and_age(holder):
    h = holder("listen")
    p = h.info["port"]
    r = port(p, check=True)
    assert r.exit_code == 1  # --check: a plain bind on 0.0.0.0 fails now
    socks = r.report.get("sockets")
    assert socks.rows[0]["state"] == "LISTEN"  # listeners first
    assert {row["state"] for row in socks.rows} == {"LISTEN", "ESTABLISHED"}
    assert all(row["local"] == f"127.0.0.1:{p}" for row in socks.rows)  # exact port
    lst = socks.find(state="LISTEN")
    assert lst["pid"] == h.pid and isinstance(lst["pid"], int) and lst["pids"] == 1
    proc = r.report.get("processes").find(pid=h.pid)
    assert proc["ppid"] == os.getpid() and proc["user"] == processes.user_name(os.geteuid())
    assert 0 <= proc["age_s"] < 600
    # The cell is argv shell-quoted and shortened to fit; the JSON keeps it whole.
    argv = Path(f"/proc/{h.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    quoted = shlex.join(a.decode() for a in argv)
    cell = proc["command"]
    assert len(cell) <= 60 and cell.endswith("...") and quoted.startswith(cell[:-3]), cell
    assert cell.startswith(shlex.quote(sys.executable)[:20])  # however long the path is
    # JSON: argv whole (the -c loader included, unquoted), pids as integers.
    (held,) = [x for x in r.data["holders"] if x["state"] == "LISTEN"]
    assert held["argv"] == [[a.decode() for a in argv]] and held["pids"] == [h.pid]
    assert r.data["free"] == {"plain": False, "reuseaddr": False}
    assert f"pid {h.pid}" in r.report.summary
    assert r.report.findings[0].startswith(f"LISTEN on tcp 127.0.0.1:{p} held by pid {h.pid}")
    for addr in ("0.0.0.0", "127.0.0.1"):
        t = trial(r, "tcp", f"{addr}:{p}")
        assert (t["plain"], t["reuseaddr"]) == ("EADDRINUSE", "EADDRINUSE")
    assert trial(r, "udp", f"0.0.0.0:{p}")["plain"] == "ok"  # UDP ports are separate
    assert ss_pids(p) == {h.pid}


def test_forked_worker_and_pass_fds_child_are_named_with_the_parent(holder):
    h = holder("fork")
    p, forked, execd = h.info["port"], h.info["forked"], h.info["execd"]
    r = port(p, tcp=True)
    row = r.report.get("sockets").find(state="LISTEN")
    assert row["pids"] == 3 and row["pid"] == h.pid
    procs = r.report.get("processes")
    assert {x["pid"] for x in procs.rows} == {h.pid, forked, execd}
    assert procs.find(pid=forked)["ppid"] == h.pid and procs.find(pid=execd)["ppid"] == h.pid
    (held,) = r.data["holders"]
    assert held["pids"] == sorted([h.pid, forked, execd])
    assert held["ppids"][held["pids"].index(execd)] == h.pid
    f = r.report.findings[0]
    # The fix names every process that must go, and why the children hold it.
    assert f"{forked} is a child of {h.pid} that inherited the socket" in f
    assert f"{execd} is a child of {h.pid} that inherited the socket" in f
    assert f"kill {' '.join(map(str, sorted([h.pid, forked, execd])))}" in f
    assert ss_pids(p) == {h.pid, forked, execd}  # ss -p agrees


def test_fd_passed_over_a_unix_socket_names_the_receiver(holder):
    h = holder("scm")
    p, receiver = h.info["port"], h.info["receiver"]
    r = port(p, tcp=True)
    lst = r.report.get("sockets").find(state="LISTEN")
    assert lst["pids"] == 2
    f = r.report.findings[0]
    assert str(receiver) in f and str(h.pid) in f
    assert ss_pids(p) == {h.pid, receiver}


def test_bound_not_listening_socket_is_found_where_proc_and_ss_miss_it(holder):
    h = holder("bound")
    p = h.info["port"]
    assert kernel.proc_net_sockets("tcp", p) == []
    ss = subprocess.run(
        ["ss", "-Htan", f"sport = :{p}"], capture_output=True, text=True, timeout=10
    )
    assert ss.stdout.strip() == ""
    r = port(p, tcp=True, check=True)
    assert r.exit_code == 1
    (row,) = r.report.get("sockets").rows
    assert row["state"] == "BOUND-INACTIVE" and row["pid"] == h.pid
    assert "bound but not listening" in r.report.findings[0]
    assert "SO_REUSEADDR succeeds" not in r.report.findings[0]


def test_bound_socket_that_set_reuseaddr_lets_a_reuseaddr_bind_through(holder):
    h = holder("bound-reuse")
    p = h.info["port"]
    r = port(p, tcp=True, check=True, reuseaddr=True)
    t = trial(r, "tcp", f"0.0.0.0:{p}")
    assert (t["plain"], t["reuseaddr"]) == ("EADDRINUSE", "ok")
    assert r.data["free"] == {"plain": False, "reuseaddr": True} and r.exit_code == 0
    assert "SO_REUSEADDR succeeds now" in r.report.findings[0]


@needs_ipv6
def test_dual_stack_and_v6only_listeners_are_told_apart(holder):
    h = holder("v6")
    dual, v6only = h.info["dual"], h.info["v6only"]
    r = port(dual, tcp=True)
    (row,) = r.report.get("sockets").rows
    assert row["local"] == f"[::]:{dual}" and row["covers"] == "IPv4+IPv6"
    assert trial(r, "tcp", f"0.0.0.0:{dual}")["plain"] == "EADDRINUSE"
    assert "dual-stack: it covers IPv4 too" in r.report.findings[0]
    r = port(v6only, tcp=True)
    assert r.report.get("sockets").rows[0]["covers"] == "IPv6 only"
    assert trial(r, "tcp", f"0.0.0.0:{v6only}")["plain"] == "ok"
    assert trial(r, "tcp", f"[::]:{v6only}", "IPV6_V6ONLY=1")["plain"] == "EADDRINUSE"


def test_udp_socket_and_protocol_filters(holder):
    h = holder("udp")
    p = h.info["port"]
    r = port(p)
    udp = [x for x in r.report.get("sockets").rows if x["proto"].startswith("udp")]
    assert [(x["proto"], x["state"], x["pid"]) for x in udp] == [("udp", "UNCONN", h.pid)]
    assert any("blocks UDP binds only" in f for f in r.report.findings)
    r = port(p, udp=True, check=True)
    assert r.exit_code == 1 and {x["proto"] for x in r.report.get("trials").rows} == {"udp"}
    r = port(f"{p}/udp", check=True)  # the same, from the target
    assert r.exit_code == 1 and {x["proto"] for x in r.report.get("trials").rows} == {"udp"}


def test_orphaned_socket_is_owned_by_no_process():
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
        r = port(p, tcp=True)
    row = r.report.get("sockets").find(state="FIN_WAIT2")
    assert row["pids"] == 0 and "owner closed it" in row["pid"].reason


def test_connection_in_the_accept_queue_is_not_called_orphaned(holder):
    """A connection the server has not accept()ed yet has inode 0 in sock_diag (no file
    until accept: inet_csk_accept -> sock_graft) while ESTABLISHED: it waits in the
    listener's queue; nobody closed it. Accepted, it gets the listener's process."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    p = lst.getsockname()[1]
    with lst, socket.create_connection(("127.0.0.1", p), timeout=5) as c:
        wait_for_state(p, 1)  # the server side is ESTABLISHED in the accept queue
        queued = port(p, tcp=True).report.get("sockets").find(state="ESTABLISHED", remote=fmt(c))
        assert queued["inode"] == 0 and queued["pids"] == 0
        reason = queued["pid"].reason
        assert "accept queue" in reason and "closed" not in reason
        r = port(p, tcp=True)
        assert any("1 not accept()ed yet" in f for f in r.report.findings)
        a, _ = lst.accept()
        with a:
            row = port(p, tcp=True).report.get("sockets").find(state="ESTABLISHED", remote=fmt(c))
            assert row["pid"] == os.getpid() and row["inode"] != 0


def fmt(s: socket.socket) -> str:
    host, p = s.getsockname()[:2]
    return f"{host}:{p}"


@needs_ipv6
def test_a_trial_on_one_ipv6_address_is_ipv6_only(holder):
    """IPV6_V6ONLY decides coverage only for [::]: a bind to [::1] is IPv6-only whatever
    net.ipv6.bindv6only says (__inet6_bind sets sk_ipv6only), so it is never called
    dual-stack, and it succeeds beside an IPv4 listener on the same port."""
    srv = holder("listen-on", str(free_port()))
    p = srv.info["port"]
    with socket.socket(socket.AF_INET6) as s:  # the kernel's own answer, independently
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        s.bind(("::1", p))
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    r = port(f"[::1]:{p}", tcp=True, check=True)
    assert r.exit_code == 0
    t = trial(r, "tcp", f"[::1]:{p}", "default (IPv6-only)")
    assert t["plain"] == "ok" and t["check"]
    assert "dual-stack" not in r.report.summary
    assert any("IPv6-only whatever net.ipv6.bindv6only says" in f for f in r.report.findings)
    # The wildcard's plain trial still reports what bindv6only gave it.
    bv6 = kernel.sysctl_int("net.ipv6.bindv6only")
    want = "IPv6-only" if bv6 else "dual-stack"
    assert trial(port(p, tcp=True), "tcp", f"[::]:{p}", f"default ({want})")


def test_proc_fallback_when_sock_diag_is_refused(holder, monkeypatch):
    h = holder("listen")
    p = h.info["port"]

    def refused(*args: Any, **kwargs: Any) -> list[Any]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(portdiag, "diag_port", refused)
    r = port(p, tcp=True)
    assert r.report.get("sockets").find(state="LISTEN")["pid"] == h.pid
    assert any("/proc/net/tcp instead" in f for f in r.report.findings)


def test_psutil_fallback_agrees_with_netlink_on_listeners_and_pids(holder):
    """The off-Linux path (psutil.net_connections), forced on Linux: the same listeners
    with the same pids as the netlink path; what it cannot see is said."""
    hs = [holder("fork"), holder("listen"), holder("udp")]
    for h in hs:
        p = h.info["port"]
        a, b = port(p), port(p, fallback=True)

        def listeners(r: PortResult) -> set[tuple[str, str, tuple[int, ...]]]:
            return {
                (x["proto"], x["local"], tuple(x["pids"]))
                for x in r.data["holders"]
                if x["state"] in ("LISTEN", "UNCONN")
            }

        assert listeners(a) == listeners(b) and listeners(a)
        assert any("psutil.net_connections()" in f for f in b.report.findings)
    # Forced through the environment too (the same switch non-Linux systems take).
    out = module(
        str(hs[1].info["port"]),
        "--tcp",
        "--json",
        env={**os.environ, "SOCKPROBE_PORT_FALLBACK": "1"},
    )
    doc = json.loads(out.stdout)
    assert any(x["pids"] == [hs[1].pid] for x in doc["holders"] if x["state"] == "LISTEN")


# -- managers ---------------------------------------------------------------------------------
CGROUP2 = next(
    (
        p
        for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
        if os.path.exists(f"{p}/cgroup.procs")
    ),
    None,
)


@pytest.fixture
def cgroup() -> Iterator[Callable[[str, int], None]]:
    """Move a pid into a real cgroup v2 directory named like a unit or container scope;
    every directory made is removed afterwards (once its processes have gone)."""
    if os.geteuid() != 0 or CGROUP2 is None:
        pytest.skip("needs root and a writable cgroup v2 hierarchy")

    def move(rel: str, pid: int) -> None:
        assert rel.startswith("sockprobe-test.slice/")
        d = Path(CGROUP2, rel)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(f"{pid}\n")

    yield move
    slice_ = Path(CGROUP2, "sockprobe-test.slice")
    for dirpath, _dirs, _files in os.walk(slice_, topdown=False):
        d = Path(dirpath)
        # Move whatever is still inside back to the root cgroup, then remove the directory.
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                Path(CGROUP2, "cgroup.procs").write_text(f"{pid}\n")
            except OSError:  # ESRCH: it exited meanwhile
                pass
        end = time.monotonic() + 5
        while True:
            try:
                d.rmdir()
                break
            except OSError:  # EBUSY while an exiting process is still counted
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)


def test_holder_in_a_systemd_service_cgroup_gets_the_stop_command(holder, cgroup):
    h = holder("listen")
    p = h.info["port"]
    cgroup("sockprobe-test.slice/sockprobe-test.service", h.pid)
    r = port(p, tcp=True)
    assert managers.read_cgroup(h.pid) == "/sockprobe-test.slice/sockprobe-test.service"
    proc = r.report.get("processes").find(pid=h.pid)
    assert proc["managed_by"] == "systemd unit sockprobe-test.service"
    (held,) = [x for x in r.data["holders"] if x["state"] == "LISTEN"]
    assert held["unit"] == "sockprobe-test.service" and held["container"] is None
    f = r.report.findings[0]
    assert "`systemctl stop sockprobe-test.service`" in f
    assert "Restart=" in f  # no unit file here: the warning is conditional, and says so
    assert "kill " + str(h.pid) not in f
    # --kill --yes does not signal it (systemd would restart it) ...
    k = port(p, tcp=True, kill=True, yes=True, grace=0.2)
    assert k.actions[0]["action"] == "stop" and h.proc.poll() is None
    assert "systemctl stop sockprobe-test.service" in k.report.summary
    assert k.exit_code == 1
    # ... unless --force.
    k = port(p, tcp=True, kill=True, yes=True, force=True)
    assert k.actions[0]["action"] == "signal" and k.actions[0]["result"] == "exited"
    assert h.proc.wait(5) == -signal.SIGTERM


def test_holder_in_a_docker_scope_names_the_container(holder, cgroup):
    h = holder("listen")
    p = h.info["port"]
    cid = "ab12" * 16
    cgroup(f"sockprobe-test.slice/docker-{cid}.scope", h.pid)
    r = port(p, tcp=True)
    (held,) = [x for x in r.data["holders"] if x["state"] == "LISTEN"]
    assert held["container"] == cid
    m = r.report.get("processes").find(pid=h.pid)["managed_by"]
    assert m.startswith(f"docker container {cid[:12]}")
    assert f"`docker stop {cid[:12]}`" in r.report.findings[0]


def test_cgroup_paths_of_each_runtime():
    hexid = "0123456789abcdef" * 4
    assert managers.container_of(f"/system.slice/docker-{hexid}.scope") == ("docker", hexid)
    assert managers.container_of(f"/docker/{hexid}") == ("docker", hexid)
    assert managers.container_of(f"/machine.slice/libpod-{hexid}.scope") == ("podman", hexid)
    assert managers.container_of(
        f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{hexid}.scope"
    ) == ("kubernetes", hexid)
    assert managers.container_of("/system.slice/nginx.service") is None
    assert managers.unit_of("/system.slice/nginx.service") == "nginx.service"
    assert (
        managers.unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service")
        == "x.service"
    )


def test_socket_units_are_found_by_their_listen_lines(tmp_path):
    """Socket activation: the .socket unit whose ListenStream= names the port."""
    (tmp_path / "web.socket").write_text("[Socket]\nListenStream=[::]:8080\n")
    (tmp_path / "dns.socket").write_text("[Socket]\nListenDatagram=53\nListenStream=53\n")
    (tmp_path / "other.socket").write_text("[Socket]\nListenStream=18080\n")
    dirs = (str(tmp_path),)
    assert managers.socket_units(8080, dirs) == ["web.socket"]
    assert managers.socket_units(53, dirs) == ["dns.socket"]
    assert managers.socket_units(80, dirs) == []


def test_restart_is_read_from_the_unit_file_and_its_drop_ins(tmp_path):
    (tmp_path / "web.service").write_text("[Service]\nExecStart=/bin/web\nRestart=on-failure\n")
    (tmp_path / "web.service.d").mkdir()
    (tmp_path / "web.service.d" / "override.conf").write_text("[Service]\nRestart=always\n")
    got = managers.unit_setting("web.service", "Restart", (str(tmp_path),))
    assert got == ("always", str(tmp_path / "web.service.d" / "override.conf"))
    assert managers.unit_setting("none.service", "Restart", (str(tmp_path),)) is None


def test_docker_proxy_argv_is_named_with_what_it_forwards(holder):
    p = free_port()
    h = holder(
        "listen-on",
        str(p),
        "-proto",
        "tcp",
        "-host-ip",
        "127.0.0.1",
        "-host-port",
        str(p),
        "-container-ip",
        "172.17.0.2",
        "-container-port",
        "80",
        argv0="docker-proxy",
    )
    r = port(p, tcp=True)
    proc = r.report.get("processes").find(pid=h.pid)
    assert proc["command"].startswith("docker-proxy ")
    assert proc["managed_by"] == (
        f"forwarder docker-proxy (tcp 127.0.0.1:{p} to container 172.17.0.2:80)"
    )
    assert f"docker ps --filter publish={p}" in r.report.findings[0]
    k = port(p, tcp=True, kill=True, yes=True, grace=0.2)
    assert k.actions[0]["action"] == "stop" and h.proc.poll() is None


# -- targets as pasted ------------------------------------------------------------------------
def test_every_target_form_parses():
    http = socket.getservbyname("http", "tcp")
    cases = {
        "8080": (8080, "", ""),
        ":8080": (8080, "", ""),
        "*:8080": (8080, "", ""),
        "127.0.0.1:8080": (8080, "", "127.0.0.1"),
        "[::1]:8080": (8080, "", "::1"),
        "[::]:8080": (8080, "", "::"),
        "0.0.0.0:8080": (8080, "", "0.0.0.0"),
        "tcp/8080": (8080, "tcp", ""),
        "8080/udp": (8080, "udp", ""),
        "UDP/53": (53, "udp", ""),
        "http": (http, "", ""),
        "http/tcp": (http, "tcp", ""),
        # URLs as pasted from a browser or a config; no port: the scheme's service.
        "http://127.0.0.1:8080/health": (8080, "", "127.0.0.1"),
        "http://[::]:8080": (8080, "", "::"),
        "http://0.0.0.0": (http, "", "0.0.0.0"),
        "tcp://127.0.0.1:5432": (5432, "tcp", "127.0.0.1"),
        "udp://[::1]:53": (53, "udp", "::1"),
    }
    for text, (p, proto, address) in cases.items():
        t = parse_target(text)
        assert (t.port, t.proto, t.address) == (p, proto, address), text
    local = parse_target("localhost:8080")
    assert local.port == 8080 and local.address in ("127.0.0.1", "::1")
    assert parse_target("/run/app.sock").unix == "/run/app.sock"
    assert parse_target("./app.sock").unix == "./app.sock"
    assert parse_target("@name").unix == "@name"
    assert parse_target("unix:///run/app.sock").unix == "/run/app.sock"


def test_an_address_in_the_target_sets_the_trial_address(holder):
    h = holder("listen")
    p = h.info["port"]
    for target, address in (
        (f"127.0.0.1:{p}", "127.0.0.1"),
        (f"localhost:{p}", None),
        (f":{p}", "0.0.0.0"),
    ):
        r = port(target, check=True)
        (t,) = [x for x in r.report.get("trials").rows if x["check"] and x["proto"] == "tcp"]
        if address:
            assert t["address"] == f"{address}:{p}"
        assert r.exit_code == 1 and r.report.get("sockets").find(state="LISTEN")["pid"] == h.pid
    r = port(f"127.0.0.2:{p}", tcp=True, check=True)  # 127.0.0.2 does not overlap
    assert r.exit_code == 0 and trial(r, "tcp", f"127.0.0.2:{p}")["check"] is True
    if can_ipv6():
        r = port(f"[::1]:{p}", tcp=True, check=True)
        assert r.exit_code == 0 and trial(r, "tcp", f"[::1]:{p}", "default (IPv6-only)")["check"]


@pytest.mark.parametrize(
    "args",
    [
        ["0"],
        ["70000"],
        ["-5"],
        ["no-such-service-xyz"],
        ["1.2.3.4.5:80"],
        ["[::1:80"],
        ["::1:80"],
        ["http://127.0.0.1:99999"],
        ["tcp://127.0.0.1"],
        ["/tmp/x.sock", "--tcp"],
        ["80", "--limit", "-1"],
        ["9" * 5000],
        ["tcp/80", "--udp"],
        ["80", "--yes"],
        ["80", "--signal", "BOGUS"],
        ["a" * 200 + "/" + "b" * 200],
    ],
    ids=lambda a: " ".join(a)[:30],
)
def test_bad_targets_exit_2_with_one_line(args):
    r = module(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sockprobe:") and "Traceback" not in r.stderr
    assert len(lines[0]) < 300


# -- --check: could a new listener start now ----------------------------------------------------
def test_check_reuseaddr_after_a_reuseaddr_server_closed_first():
    """The issue's case: a server that set SO_REUSEADDR exits first and leaves a TIME_WAIT.
    A plain bind fails for 60 s; the same server (SO_REUSEADDR) could start at once."""
    p = time_wait_port(reuse=1)
    plain = port(p, tcp=True, check=True)
    assert plain.exit_code == 1 and plain.data["free"] == {"plain": False, "reuseaddr": True}
    reuse = port(p, tcp=True, check=True, reuseaddr=True)
    assert reuse.exit_code == 0
    assert "`--check --reuseaddr` exits 0" in reuse.report.findings[0]
    assert "TIME_WAIT" in reuse.report.summary
    # The kernel agrees: a SO_REUSEADDR listener starts on the port now.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", p))
        s.listen(1)
    # A server that did not set it leaves a TIME_WAIT that blocks both.
    q = time_wait_port(reuse=0)
    r = port(q, tcp=True, check=True, reuseaddr=True)
    assert r.exit_code == 1 and r.data["free"] == {"plain": False, "reuseaddr": False}
    assert "had not set it" in r.report.findings[0]


def test_check_quiet_prints_nothing_and_answers(holder):
    h = holder("listen")
    busy = module(str(h.info["port"]), "--check", "-q")
    assert (busy.returncode, busy.stdout, busy.stderr) == (1, "", "")
    free = module(str(free_port()), "--tcp", "--check", "-q")
    assert (free.returncode, free.stdout, free.stderr) == (0, "", "")


@needs_ipv6
def test_plain_v6_trial_follows_bindv6only(netns):
    """With bindv6only=1 a plain [::] bind is IPv6-only, so it succeeds beside an IPv4
    listener: `--check --host ::1` exits 0 and says it was IPv6-only (read back)."""
    code = r"""
import json, socket, sys
from sockprobe.port import Params, run
lst = socket.socket(); lst.bind(("0.0.0.0", 8080)); lst.listen(1)
out = {}
for host in ("::1", "127.0.0.1"):
    r = run(Params(target="8080", tcp=True, check=True, host=host))
    (t,) = [x for x in r.report.get("trials").rows if x["check"]]
    out[host] = [r.exit_code, t["address"], t["ipv6_only"], t["plain"], r.report.findings]
print(json.dumps(out))
"""
    for bv6, want in ((1, (0, "IPv6-only", "ok")), (0, (1, "dual-stack", "EADDRINUSE"))):
        p = netns.in_netns(code, sysctls={"net.ipv6.bindv6only": bv6})
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        code6, address, mode, plain, findings = out["::1"]
        assert (code6, mode.split("(")[1].rstrip(")"), plain) == want, out
        assert address == "[::]:8080"
        assert any(f"net.ipv6.bindv6only is {bv6}" in f for f in findings)
        assert out["127.0.0.1"][0] == 1  # 0.0.0.0 is taken either way


def test_runs_with_the_ephemeral_range_exhausted(netns):
    """No ephemeral port left (the range is one port, and it is taken): port still runs,
    and says the range is exhausted."""
    code = r"""
import json, socket
from sockprobe.port import Params, run
hold = socket.socket(); hold.bind(("127.0.0.1", 40000)); hold.listen(1)
probe = socket.socket()
try:
    probe.bind(("127.0.0.1", 0)); exhausted = False
except OSError:
    exhausted = True
r = run(Params(target="8080", check=True))
import contextlib, io
from sockprobe.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    cli_code = main(["port", "8080", "--check"])
print(json.dumps([exhausted, r.exit_code, r.report.summary, r.report.findings, cli_code]))
"""
    p = netns.in_netns(code, sysctls={"net.ipv4.ip_local_port_range": "40000 40000"})
    assert p.returncode == 0, p.stderr
    exhausted, exit_code, summary, findings, cli_code = json.loads(p.stdout)
    assert exhausted and exit_code == 0 and "free" in summary
    assert cli_code == 0  # the CLI runs it too (no exit 3 for the exhausted range)
    assert any("ephemeral port range is exhausted" in f and "EADDRINUSE" in f for f in findings)


# -- --wait -----------------------------------------------------------------------------------
def test_wait_returns_when_the_listener_exits_and_times_out_on_time_wait(holder):
    """Both cases wait on kernel timers or processes, so they run side by side."""
    h = holder("brief", "1.0")
    p = h.info["port"]
    q = time_wait_port(reuse=0)
    lines: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        a = pool.submit(port, p, tcp=True, wait=10.0, progress=lines.append)
        b = pool.submit(port, q, tcp=True, wait=1.0)
        ra, rb = a.result(), b.result()
        took = time.monotonic() - t0
    assert ra.exit_code == 0 and ra.data["free"]["plain"]
    assert ra.report.summary.startswith(f"port {p}: free after")
    w = ra.report.get("wait")
    assert w.rows[0]["held_by"] == f"LISTEN pid {h.pid}" and w.rows[-1]["held_by"] == "free"
    assert 0.5 <= w.rows[-1]["at_s"] < 8
    assert lines and lines[0] == f"port {p}: LISTEN pid {h.pid}"
    # The TIME_WAIT does not go in 1 s: exit 1, and what is left is said in seconds.
    assert rb.exit_code == 1
    left = rb.report.get("wait").rows[0]["held_by"]
    assert left.startswith("1 TIME_WAIT, ") and left.endswith(" s left")
    assert 50 <= int(left.split(", ")[1].split()[0]) <= 60
    assert took < 9


def test_wait_with_reuseaddr_is_free_at_once_beside_a_reuseaddr_time_wait():
    p = time_wait_port(reuse=1)
    r = port(p, tcp=True, wait=5.0, reuseaddr=True)
    assert r.exit_code == 0 and r.report.get("wait").rows[0]["held_by"] == "free"


WAIT_1S = ("--wait", "--deadline", "1", "-q")


def test_bare_wait_on_a_held_port_answers_1_not_4(holder):
    """Bare --wait waits until --deadline, less a moment for the report, so a port still
    held at the end gives --wait's answer (exit 1), not "deadline ran out" (exit 4).
    Through the real CLI, in a subprocess."""
    h = holder("listen")
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "sockprobe", "port", str(h.info["port"]), *WAIT_1S],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - t0
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")
    # It waited (most of the second), and the interpreter's start is all the rest.
    assert 0.7 <= took < 1.0 + 0.25 + 2.0


@pytest.mark.parametrize("entry", [["sockprobe.port"], ["sockprobe", "port"]])
def test_wait_ctrl_c_exits_130(holder, entry):
    h = holder("listen")
    proc = subprocess.Popen(
        [sys.executable, "-m", *entry, str(h.info["port"]), "--wait", "30"],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err


# -- --kill -----------------------------------------------------------------------------------
def test_kill_signals_the_listener_and_spares_its_client(holder):
    """A child listener, and another process with a *client* connection to that port:
    only the listener's holder is signalled; the client survives."""
    srv = holder("listen-on", str(free_port()))
    p = srv.info["port"]
    client = holder("client", str(p))
    r = port(p, tcp=True, kill=True, yes=True)
    assert [(a["pid"], a["action"], a["result"]) for a in r.actions] == [
        (srv.pid, "signal", "exited")
    ]
    assert srv.proc.wait(5) == -signal.SIGTERM
    assert client.proc.poll() is None  # the client is alive
    assert r.report.summary.startswith(f"--kill sent SIGTERM to pid {srv.pid}")
    # What was measured before the signal says so, advice included.
    assert all(f.startswith("Before --kill: ") for f in r.report.findings[1:])
    assert any(f"Before --kill: LISTEN on tcp 127.0.0.1:{p}" in f for f in r.report.findings)
    assert "before --kill" in r.report.get("sockets").title
    # The server accepted nothing, so the client's connection was reset or closed by
    # the kernel; no TIME_WAIT stays on p unless the server side closed first.
    assert r.exit_code == (0 if r.data["free"]["plain"] else 1)


def test_kill_acts_on_exactly_the_port_asked(holder):
    """Two listeners on P and on a port whose digits end P's (49302 and 9302): --kill on
    the short one leaves the other alone."""
    for _ in range(20):
        long_ = free_port()
        short = int(str(long_)[1:])
        if short < 1024:
            continue
        try:
            a = holder("listen-on", str(long_))
            b = holder("listen-on", str(short))
            break
        except RuntimeError:  # one of them was taken meanwhile: try another pair
            continue
    else:
        pytest.skip("no free pair of ports P and its suffix")
    r = port(short, tcp=True, kill=True, yes=True)
    assert [x["pid"] for x in r.actions] == [b.pid] and r.exit_code == 0
    assert b.proc.wait(5) == -signal.SIGTERM and a.proc.poll() is None


def test_kill_without_a_terminal_needs_yes(holder):
    h = holder("listen")
    r = module(str(h.info["port"]), "--kill")
    assert r.returncode == 2 and "--yes" in r.stderr and len(r.stderr.splitlines()) == 1
    assert h.proc.poll() is None
    with pytest.raises(UsageError):
        port(h.info["port"], kill=True)


def test_kill_asks_and_a_no_signals_nothing(holder):
    h = holder("listen")
    asked: list[str] = []

    def no(text: str) -> bool:
        asked.append(text)
        return False

    r = port(h.info["port"], tcp=True, kill=True, confirm=no)
    assert asked and f"send SIGTERM to pid {h.pid}" in asked[0]
    assert r.exit_code == 1 and h.proc.poll() is None and "declined" in r.report.summary
    # Nothing was sent, so the diagnosis is current: not labelled "before --kill".
    assert not any("Before --kill" in f for f in r.report.findings)
    assert "before --kill" not in r.report.get("sockets").title


def test_kill_never_signals_sockprobe_itself():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = port(s.getsockname()[1], tcp=True, kill=True, yes=True, grace=0.1)
    assert [(a["pid"], a["action"]) for a in r.actions] == [(os.getpid(), "skip")]
    assert "this sockprobe process" in r.actions[0]["result"]


def test_kill_never_signals_its_parent():
    """The shell or script that ran sockprobe holds the listener: it is named, not hit."""
    parent = r"""
import json, socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
r = subprocess.run([sys.executable, "-m", "sockprobe.port", str(s.getsockname()[1]), "--tcp",
                    "--kill", "--yes", "--grace", "0.1", "--json"], capture_output=True, text=True)
print(json.dumps([r.returncode, json.loads(r.stdout)["actions"]]))
"""
    p = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, cwd=str(ROOT)
    )
    assert p.returncode == 0, p.stderr  # the parent survived to print
    code, actions = json.loads(p.stdout)
    assert code == 1 and [a["action"] for a in actions] == ["skip"]
    assert actions[0]["result"] == "it is sockprobe's parent process"


def test_kill_reports_the_time_wait_left(holder):
    """The holder had accepted a connection whose peer stays: on exit the kernel closes
    the server side first, which leaves a TIME_WAIT on the port."""
    h = holder("listen")  # it holds a listener, a client and the accepted connection
    r = port(h.info["port"], tcp=True, kill=True, yes=True)
    assert r.actions[0]["result"] == "exited"
    f = r.report.findings[0]
    assert ("TIME_WAIT left" in f and "--wait" in f) or "is free now" in f


# -- other network namespaces -----------------------------------------------------------------
@pytest.fixture
def named_netns() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip(8)")
    name = f"sockprobe-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=10)


def test_all_netns_finds_a_holder_in_a_named_namespace(holder, named_netns):
    p = free_port()
    h = holder("wildcard", str(p), prefix=("ip", "netns", "exec", named_netns))
    assert h.info["port"] == p
    here = port(p, tcp=True, check=True)
    assert here.exit_code == 0  # it does not block a bind here
    assert not [x for x in here.report.get("sockets").rows if x["state"] == "LISTEN"]
    r = port(p, tcp=True, check=True, all_netns=True)
    assert r.exit_code == 0
    row = r.report.get("sockets").find(netns=named_netns, state="LISTEN")
    assert row["pid"] == h.pid and row["local"] == f"0.0.0.0:{p}"
    (held,) = [x for x in r.data["holders"] if x["netns"] == named_netns]
    assert held["pids"] == [h.pid]
    (f,) = [f for f in r.report.findings if f.startswith(f"In network namespace {named_netns}")]
    assert f"pid {h.pid}" in f and "does not block a bind here" in f


def test_all_netns_without_root_says_why(shared_copy):
    r = _as_nobody(shared_copy, "80", "--all-netns")
    assert r.returncode == 3 and "needs root" in r.stderr and "CAP_SYS_ADMIN" in r.stderr


# -- hidden holders (root runs them as an unprivileged user) ----------------------------------
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def _nobody_python() -> str | None:
    """An interpreter the unprivileged user may run (a venv under /root is not one)."""
    for py in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            ok = (
                subprocess.run(
                    [*NOBODY, py, "-c", "import sys; assert sys.version_info >= (3, 11)"],
                    capture_output=True,
                    timeout=20,
                    cwd="/",
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return py
    return None


def _as_nobody(shared: Path, *cmd: str, mount_ns: bool = False) -> subprocess.CompletedProcess[str]:
    py = _nobody_python()
    if py is None:
        pytest.skip("no Python >= 3.11 the unprivileged user may run")
    argv = [*NOBODY, py, "-m", "sockprobe.port", *cmd, "--json"]
    if mount_ns:
        # A proc instance of its own with hidepid=2, in a private mount namespace, so the
        # host's /proc is untouched (procfs options are per mount since Linux 5.8).
        script = 'mount -t proc -o hidepid=2 proc /proc && exec "$@"'
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "_", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(shared), "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture
def shared_copy() -> Iterator[Path]:
    """A world-readable copy of the package (the checkout may sit in a 0700 directory)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    shared = Path(tempfile.mkdtemp(prefix="sockprobe-nobody-"))
    shutil.copytree(
        ROOT / "sockprobe", shared / "sockprobe", ignore=shutil.ignore_patterns("__pycache__")
    )
    for d, _, files in os.walk(shared):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    try:
        yield shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("hidepid", [False, True], ids=["fd-EACCES", "hidepid=2"])
def test_other_users_holder_is_hidden_not_absent(holder, shared_copy, hidepid):
    h = holder("listen")
    p = str(h.info["port"])
    r = _as_nobody(shared_copy, p, "--tcp", mount_ns=hidepid)
    if r.returncode != 0 and ("No module named" in r.stderr or "Permission denied" in r.stderr):
        pytest.skip(f"the unprivileged user cannot run this checkout: {r.stderr[-200:]}")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    table = next(t for t in doc["tables"] if t["id"] == "sockets")
    row = next(x for x in table["rows"] if x["state"] == "LISTEN")
    reason = row["na"]["pid"]
    assert reason.startswith("hidden from this user") and "run as root" in reason
    assert ("hidepid=2" in reason) == hidepid
    assert row["user"] == "root"  # the socket's uid, from sock_diag
    assert "no process" not in json.dumps(doc["findings"])
    # No table names the hidden pid (compared as a value: its digits may occur in an
    # inode or a port by chance).
    pids = [r.get(k) for t in doc["tables"] for r in t["rows"] for k in ("pid", "ppid")]
    assert h.pid not in pids
    (held,) = [x for x in doc["holders"] if x["state"] == "LISTEN"]
    assert held["pids"] == [] and held["hidden"].startswith("hidden from this user")


def test_socket_in_a_0700_directory_is_hidden_not_missing(holder, shared_copy):
    base = Path(tempfile.mkdtemp(prefix="sockprobe-0700-"))  # pytest's tmp_path is 0700
    try:
        os.chmod(base, 0o755)
        d = base / "private"
        d.mkdir(mode=0o700)
        path = str(d / "app.sock")
        holder("unix", path)
        r = _as_nobody(shared_copy, path, "--check")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if "No module named" in r.stderr:
        pytest.skip("the unprivileged user cannot run this checkout")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert "hidden from this user" in doc["summary"] and "EACCES" in doc["summary"]
    assert f"{d} denies search permission" in doc["findings"][0]
    assert "no file" not in doc["summary"].lower()
    # /proc/net/unix still lists the listener bound there (no permission check in
    # unix_seq_show), so the finding says so, and the trials say why they were not run.
    assert "/proc/net/unix lists 1 socket bound to it (listening)" in doc["findings"][0]
    trials = next(t for t in doc["tables"] if t["id"] == "unix_trials")
    bind = next(x for x in trials["rows"] if x["operation"] == "bind")
    assert "EACCES" in bind["na"]["result"] and "no file" not in bind["na"]["result"]


# -- UNIX socket paths ------------------------------------------------------------------------
def test_live_unix_socket_names_its_owner_and_is_left_working(holder, tmp_path):
    path = str(tmp_path / "live.sock")
    h = holder("unix", path)
    r = port(path, check=True)
    assert r.exit_code == 1
    row = r.report.get("unix_sockets").find(state="LISTEN")
    assert row["pid"] == h.pid and row["ppid"] == os.getpid()
    trials = {x["operation"]: x["result"] for x in r.report.get("unix_trials").rows}
    assert trials["connect (stream, non-blocking)"] == "ok"
    assert trials["bind"] == "EADDRINUSE"
    assert trials["SO_PEERCRED of the listener"].startswith(f"pid {h.pid},")
    assert "live" in r.report.summary and f"pid {h.pid}" in r.report.summary
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)


def test_stale_unix_socket_file_is_diagnosed_and_left_in_place(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    s.close()  # close() does not remove the file: it is now stale
    r = port(path, check=True)
    assert r.exit_code == 1 and "stale" in r.report.summary
    trials = {x["operation"]: x["result"] for x in r.report.get("unix_trials").rows}
    assert trials["connect (stream, non-blocking)"] == "ECONNREFUSED"
    assert os.path.exists(path)


def test_missing_unix_path_is_free_and_not_created(tmp_path):
    path = str(tmp_path / "none.sock")
    r = port(path, check=True)
    assert r.exit_code == 0 and "free" in r.report.summary and not os.path.exists(path)


def test_abstract_name():
    name = f"sockprobe-test-{os.getpid()}-{time.monotonic_ns()}"
    assert port(f"@{name}", check=True).exit_code == 0
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("\0" + name)
        s.listen(1)
        r = port(f"@{name}", check=True)
    assert r.exit_code == 1
    assert r.report.get("unix_sockets").find(state="LISTEN")["pid"] == os.getpid()


def test_deadline_bounds_the_command():
    """--deadline 0.01 (the least allowed): the diagnosis either finishes inside it or
    stops with exit 4 naming the step; either way the process ends at once."""
    t0 = time.monotonic()
    r = module(str(free_port()), "--deadline", "0.01")
    assert time.monotonic() - t0 < 10
    if r.returncode == 4:
        assert "--deadline 0.01 s ran out while" in r.stderr and len(r.stderr.splitlines()) == 1
    else:
        assert r.returncode == 0, r.stderr


def test_through_the_cli(holder, capsys):
    """The generic CLI builds `port`'s options from Params and runs it."""
    from sockprobe.cli import main

    h = holder("listen")
    code = main(["port", f":{h.info['port']}", "--tcp", "--check", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    table = next(t for t in doc["tables"] if t["id"] == "sockets")
    assert any(r["pid"] == h.pid and r["state"] == "LISTEN" for r in table["rows"])


def test_json_with_free_and_holders_follows_the_schema(holder):
    """The report plus the top-level `free`, `holders` (and `actions`) the CLI adds."""
    import jsonschema

    schema = json.loads((ROOT / "schema" / "sockprobe.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    h = holder("fork")
    for r in (port(h.info["port"]), port(h.info["port"], kill=True, yes=True)):
        doc = json.loads(json.dumps({**r.report.to_dict(), **r.data, "actions": r.actions}))
        errors = [e.message for e in validator.iter_errors(doc)]
        assert errors == [], errors
    assert isinstance(doc["holders"][0]["pids"][0], int) and doc["free"]["plain"] in (True, False)
