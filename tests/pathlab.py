"""A real path between two network namespaces, with a fixed delay, for the two-host tests.

This kernel has no netem, so the delay is made in user space: a forwarder process
creates one TUN device in each namespace (a TUN device belongs to the namespace its
creator was in at TUNSETIFF, so the forwarder enters each with setns(2) in turn), then
copies every IP packet read from one device to the other after `delay_ms`. Each side
sees a point-to-point link with MTU `mtu` to the other's address. With delay 0 the path
is still a real one: MTU 1500, MSS 1460, fragmentation, two routing tables.

The addresses are this test's own, inside namespaces it made: 198.18.0.1 (side A, the
probe) and 198.18.0.2 (side B, the agent), from the benchmarking range (RFC 2544).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import TracebackType

A_ADDR = "198.18.0.1"
B_ADDR = "198.18.0.2"
ROOT = Path(__file__).resolve().parent.parent

_FORWARDER = r"""
import ctypes, fcntl, os, select, struct, sys, time, collections
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
def enter(name):
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    IFF_TUN, IFF_NO_PI, TUNSETIFF = 0x0001, 0x1000, 0x400454ca
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd
ns_a, ns_b, delay = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000
home = os.open("/proc/self/ns/net", os.O_RDONLY)
enter(ns_a); fa = tun("sptun0")
enter(ns_b); fb = tun("sptun0")
libc.setns(home, CLONE_NEWNET)
print("ready", flush=True)
queues = {fa: collections.deque(), fb: collections.deque()}  # packets due for that fd
other = {fa: fb, fb: fa}
stdin = sys.stdin.fileno()
while True:
    now = time.monotonic()
    due = [q[0][0] for q in queues.values() if q]
    timeout = max(0.0, min(due) - now) if due else 1.0
    r, _, _ = select.select([fa, fb, stdin], [], [], timeout)
    if stdin in r:
        break  # the test closed our stdin (or died): stop
    now = time.monotonic()
    for fd in r:
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            queues[other[fd]].append((now + delay, pkt))
    now = time.monotonic()
    for fd, q in queues.items():
        while q and q[0][0] <= now:
            try:
                os.write(fd, q.popleft()[1])
            except OSError:
                pass
"""


def skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (ip netns add, TUN devices)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Path2:
    """Two namespaces joined by a delay line (`delay_ms`) or, with `veth=True`, by a plain
    veth pair; `run_a`/`popen_b` run commands inside."""

    def __init__(self, delay_ms: float = 0.0, mtu: int = 1500, veth: bool = False) -> None:
        tag = secrets.token_hex(3)
        self.a, self.b = f"spA{tag}", f"spB{tag}"
        self.delay_ms, self.mtu, self.veth = delay_ms, mtu, veth
        self.forwarder: subprocess.Popen[str] | None = None
        self.children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Path2:
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            if self.veth:
                _ip(
                    "-n",
                    self.a,
                    "link",
                    "add",
                    "sptun0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "sptun0",
                    "netns",
                    self.b,
                )
                for ns, mine, theirs in ((self.a, A_ADDR, B_ADDR), (self.b, B_ADDR, A_ADDR)):
                    _ip("-n", ns, "addr", "add", mine, "peer", theirs, "dev", "sptun0")
                    _ip("-n", ns, "link", "set", "sptun0", "mtu", str(self.mtu), "up")
                return self
            self.forwarder = subprocess.Popen(
                [sys.executable, "-c", _FORWARDER, self.a, self.b, str(self.delay_ms)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.forwarder.stdout is not None
            line = self.forwarder.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError("the delay line did not start")
            for ns, mine, theirs in ((self.a, A_ADDR, B_ADDR), (self.b, B_ADDR, A_ADDR)):
                _ip("-n", ns, "addr", "add", mine, "peer", theirs, "dev", "sptun0")
                _ip("-n", ns, "link", "set", "sptun0", "mtu", str(self.mtu), "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _argv(self, ns: str, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, sys.executable, "-m", "sockprobe", *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    def run_a(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`sockprobe ARGS` on side A (the probe's side)."""
        return subprocess.run(
            self._argv(self.a, list(args)),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=str(ROOT),
        )

    def popen_b(self, *args: str) -> subprocess.Popen[str]:
        """`sockprobe ARGS` on side B (the agent's side), running until stopped."""
        p = subprocess.Popen(
            self._argv(self.b, list(args)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=str(ROOT),
        )
        self.children.append(p)
        return p

    def python_a(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.a, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=str(ROOT),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        if self.forwarder is not None:
            if self.forwarder.stdin is not None:
                self.forwarder.stdin.close()
            try:
                self.forwarder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.forwarder.kill()
                self.forwarder.wait()
            if self.forwarder.stdout is not None:
                self.forwarder.stdout.close()
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


del ctypes  # the forwarder imports its own; this module needs none
