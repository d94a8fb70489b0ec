"""A peer that vanishes without a word, for tests that run inside a network namespace.

Loopback cannot lose packets, and netem is not available here, so a test that needs a
silent peer (tcp_retries2, keepalive, orphan retries) builds one: a second network
namespace B (`unshare -n sleep`), joined to the test's namespace A by a veth pair
(A 10.77.0.1, B 10.77.0.2), with a TCP server in B that accepts and then does nothing.

`cut()` replaces A's neighbour entry for B with a MAC address vb does not have: A's
frames still leave through va, reach vb and are dropped there as not for this host
(ip_rcv drops PACKET_OTHERHOST), while A's TCP believes each one was sent. That is a
black hole as a dead host or a cut cable makes one: no RST, no ICMP, no local error.

Use only inside `netns.in_netns(...)`: it changes the namespace it runs in.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

A_ADDR, B_ADDR = "10.77.0.1", "10.77.0.2"
NOWHERE_MAC = "02:00:00:00:77:99"

_SERVER = r"""
import socket, sys, time
l = socket.socket(); l.bind(("10.77.0.2", 0)); l.listen(8)
print(l.getsockname()[1], flush=True)
held = []
l.settimeout(60)
while True:
    try:
        c, _ = l.accept()
    except OSError:
        break
    held.append(c)
"""


@dataclass
class Peer:
    addr: str
    port: int
    pid: int
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cut(self) -> None:
        """A's frames to B vanish (B's to A still arrive)."""
        _run(
            "ip", "neigh", "replace", B_ADDR, "lladdr", NOWHERE_MAC, "dev", "va", "nud", "permanent"
        )

    def cut_back(self) -> None:
        """B's frames to A vanish too."""
        _run(
            "nsenter",
            f"--net=/proc/{self.pid}/ns/net",
            "ip",
            "neigh",
            "replace",
            A_ADDR,
            "lladdr",
            NOWHERE_MAC,
            "dev",
            "vb",
            "nud",
            "permanent",
        )

    def connect_once(self, port: int, clients: int = 1) -> subprocess.Popen[bytes]:
        """`clients` sockets in B each send one SYN to A:port (non-blocking connect) and
        are held open; the caller cuts both directions so no retransmission arrives."""
        code = (
            "import socket, sys, time\n"
            "held = []\n"
            f"for _ in range({clients}):\n"
            "    c = socket.socket(); c.setblocking(False); held.append(c)\n"
            f"    c.connect_ex(({A_ADDR!r}, {port}))\n"
            "print('sent', flush=True)\n"
            "time.sleep(60)\n"
        )
        proc = subprocess.Popen(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", sys.executable, "-c", code],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        self.children.append(proc)
        return proc


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@contextmanager
def peer() -> Iterator[Peer]:
    holder = subprocess.Popen(["unshare", "-n", "sleep", "120"])
    server: subprocess.Popen[str] | None = None
    try:
        ns = f"/proc/{holder.pid}/ns/net"
        own = _ns_id("/proc/self/ns/net")
        end = time.monotonic() + 5
        while _ns_id(ns) == own and time.monotonic() < end:  # unshare has not run yet
            time.sleep(0.005)
        _run(
            "ip",
            "link",
            "add",
            "va",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            str(holder.pid),
        )
        _run("ip", "addr", "add", f"{A_ADDR}/24", "dev", "va")
        _run("ip", "link", "set", "va", "up")
        inside = ("nsenter", f"--net={ns}")
        _run(*inside, "ip", "addr", "add", f"{B_ADDR}/24", "dev", "vb")
        _run(*inside, "ip", "link", "set", "vb", "up")
        server = subprocess.Popen(
            [*inside, sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        peer = Peer(B_ADDR, port, holder.pid)
        yield peer
    finally:
        for child in peer.children if "peer" in locals() else []:
            child.kill()
            child.wait(timeout=10)
        for p in (server, holder):
            if p is not None:
                p.kill()
                p.wait(timeout=10)


def _ns_id(path: str) -> str:
    import os

    return os.readlink(path)
