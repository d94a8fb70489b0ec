"""Sockets on the port in the other network namespaces of the host (`--all-netns`).

Every network namespace has its own port space (net/ipv4/inet_hashtables.c hashes
sockets with their struct net), so a holder in another namespace (a container) never
makes a bind here fail: what blocks a bind here is a socket in this namespace, such as the
forwarder (docker-proxy, rootlessport, pasta) that a container runtime starts on the host
for a published port. This module still lists them, because "which container holds
8080?" is the question behind many of these runs.

Namespaces are enumerated from /proc/*/ns/net (each link's inode identifies the
namespace, nsfs), deduplicated by inode, and named from the bind mounts in /run/netns
(`ip netns add`). Each is queried with the same sock_diag client from inside it: a netlink
socket belongs to the namespace of the process that creates it, so one forked child
enters each namespace in turn with setns(2) (CLONE_NEWNET), opens a fresh netlink
socket there, and sends the rows back over a pipe; the parent never changes namespace.
os.setns exists from Python 3.12; before, libc's setns is called through ctypes. setns
into a network namespace needs CAP_SYS_ADMIN (setns(2)), so this needs root.

Socket inodes are unique across the host, so the holders are found by the same
/proc/*/fd walk as in this namespace.
"""

from __future__ import annotations

import json
import os
import select
import socket
from typing import NamedTuple

from sockprobe.kernel import portdiag
from sockprobe.lab import Deadline
from sockprobe.status import Unsupported

CLONE_NEWNET = 0x40000000


class Namespace(NamedTuple):
    inode: int
    #: The /run/netns name, else "netns:[INODE]".
    name: str
    #: A process inside it (to open its namespace and to name it).
    pid: int
    path: str


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def this_namespace() -> int | None:
    return _ino("/proc/self/ns/net")


def namespaces(proc: str = "/proc", run_netns: str = "/run/netns") -> list[Namespace]:
    """Every other network namespace with a process in it or a /run/netns name."""
    names: dict[int, tuple[str, str]] = {}
    try:
        for n in sorted(os.listdir(run_netns)):
            ino = _ino(os.path.join(run_netns, n))
            if ino is not None:
                names.setdefault(ino, (n, os.path.join(run_netns, n)))
    except OSError:
        pass
    mine = this_namespace()
    found: dict[int, Namespace] = {}
    for p in os.listdir(proc):
        if not p.isdigit():
            continue
        path = f"{proc}/{p}/ns/net"
        ino = _ino(path)
        if ino is None or ino == mine or ino in found:
            continue
        name, npath = names.get(ino, (_container_name(int(p)) or f"netns:[{ino}]", path))
        found[ino] = Namespace(ino, name, int(p), npath)
    for ino, (name, npath) in names.items():
        if ino != mine and ino not in found:
            found[ino] = Namespace(ino, name, 0, npath)
    return sorted(found.values(), key=lambda n: n.name)


def _container_name(pid: int) -> str:
    """ "docker 0123456789ab" when the process's cgroup names a container, else ""."""
    from sockprobe.port.managers import container_of, read_cgroup

    found = container_of(read_cgroup(pid))
    return f"{found[0]} {found[1][:12]}" if found else ""


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)
    if setns is not None:  # Python >= 3.12
        setns(fd, CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def query(
    spaces: list[Namespace], port: int, protocols: tuple[str, ...], deadline: Deadline
) -> tuple[dict[str, list[portdiag.PortSocket]], dict[str, str]]:
    """(sockets on `port` per namespace name, error per namespace that could not be read)."""
    if os.geteuid() != 0:
        raise Unsupported(
            "--all-netns needs root: entering another network namespace with setns(2) "
            "needs CAP_SYS_ADMIN"
        )
    errors: dict[str, str] = {}
    fds: list[tuple[Namespace, int]] = []
    for ns in spaces:
        try:
            fds.append((ns, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError as exc:  # the process left; the mount went away
            errors[ns.name] = f"cannot open {ns.path}: {exc.strerror}"
    if not fds:
        return {}, errors
    r, w = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        os.close(r)
        os.close(w)
        for _, fd in fds:
            os.close(fd)
        raise
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            os.close(r)
            out: dict[str, object] = {}
            for ns, fd in fds:
                try:
                    _setns(fd)
                    rows = []
                    for proto in protocols:
                        number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
                        for family in _FAMILIES:
                            rows += [list(s) for s in portdiag.diag_port(family, number, port, 1.0)]
                    out[ns.name] = rows
                except OSError as exc:
                    out[ns.name] = f"{exc.strerror or exc}"
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data) :]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    for _, fd in fds:
        os.close(fd)
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline.timeout(5.0, "querying other network namespaces")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                deadline.check("querying other network namespaces")
                raise Unsupported("the namespace helper did not answer in 5 s")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still running: it did not answer in time, or this was interrupted
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    doc = json.loads(b"".join(chunks) or b"{}")
    result: dict[str, list[portdiag.PortSocket]] = {}
    for name, rows in doc.items():
        if isinstance(rows, str):
            errors[name] = rows
            continue
        result[name] = [
            portdiag.PortSocket(
                r[0],
                r[1],
                r[2],
                tuple(r[3]),
                tuple(r[4]),
                *r[5:],
            )
            for r in rows
        ]
    return result, errors
