"""Run a function in a fresh network namespace, in a forked child, and get its result.

A new network namespace (network_namespaces(7)) has its own interfaces, routes,
sysctls under /proc/sys/net and counters in /proc/net/snmp and /proc/net/netstat, and
nothing else runs in it. That makes it the place to measure what the host's loopback
hides (an `lo` with MTU 1500 instead of 65536, a sysctl changed) without touching the
host, and to read namespace counters exactly: every packet they count is the
experiment's own.

`run_in_new_netns(fn, timeout=...)` forks; the child calls unshare(CLONE_NEWNET)
(unshare(2); `os.unshare` exists only from Python 3.12, so libc's is called through
ctypes), brings `lo` up, runs `fn()` and sends back its pickled result (or the exception
it raised) through a pipe. The namespace dies with the child. The parent waits at most
`timeout` seconds; whatever happens (a result, an error, the timeout, Ctrl-C) the child is
killed if still running and always reaped, so no process outlives the call.

Privilege: unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN. Without it the child tries an
unprivileged user namespace first (CLONE_NEWUSER | CLONE_NEWNET), which grants the
capabilities inside the new namespaces where the kernel allows it
(kernel.unprivileged_userns_clone, user.max_user_namespaces, AppArmor may forbid it). If
neither works, `NetnsUnavailable` says why, and the caller reports n/a or Unsupported.

Why a forked child and not a thread that calls unshare: the namespace belongs to the
thread that unshares, and Python gives no way to be sure a thread runs nothing else; a
child process keeps the namespace (and its sockets) away from the probe entirely. The
child is forked from a process that may hold other threads: it only runs `fn` and leaves
with os._exit(), so no lock held by another thread at fork time is ever needed again
except by `fn`'s own code (keep `fn` to sockets, /proc reads and ioctls).

Linux only; elsewhere `NetnsUnavailable` ("network namespaces are Linux-only").
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sockprobe.kernel import netif

T = TypeVar("T")

#: include/uapi/linux/sched.h.
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

IS_LINUX = sys.platform.startswith("linux")


class NetnsUnavailable(Exception):
    """No network namespace could be made here; str() is the cause, for an n/a reason."""


class NetnsTimeout(Exception):
    """The child did not answer within the timeout (it was killed and reaped)."""


def _unshare(flags: int) -> None:
    fn = getattr(os, "unshare", None)
    if fn is not None:  # Python 3.12+
        fn(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter_new_netns() -> str:
    """unshare() into a new network namespace (this process or thread only) with `lo`
    up, and say how: "root" or "user namespace". Raises NetnsUnavailable."""
    if not IS_LINUX:
        raise NetnsUnavailable("network namespaces are Linux-only")
    how = "root"
    try:
        _unshare(CLONE_NEWNET)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise NetnsUnavailable(f"unshare(CLONE_NEWNET) failed: {_err(exc)}") from None
        try:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        except OSError as exc2:
            raise NetnsUnavailable(
                f"unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN ({_err(exc)}) and an "
                f"unprivileged user namespace was refused ({_err(exc2)})"
            ) from None
        how = "user namespace"
    try:
        netif.set_link("lo", up=True)
    except OSError as exc:
        raise NetnsUnavailable(f"cannot bring lo up in the new namespace: {_err(exc)}") from None
    return how


def _err(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}: {exc.strerror}"


def run_in_new_netns(fn: Callable[[], T], *, timeout: float) -> T:
    """fn() in a forked child inside a fresh network namespace whose `lo` is up.

    Returns fn's result (it must be picklable) or re-raises the exception fn raised
    (pickled; if it cannot be pickled, a RuntimeError with its text). Raises
    NetnsUnavailable when no namespace can be made, NetnsTimeout when `timeout` seconds
    pass first. The child never outlives the call."""
    if not IS_LINUX:
        raise NetnsUnavailable("network namespaces are Linux-only")
    if timeout <= 0:
        raise NetnsTimeout("no time left to start a network namespace")
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # the child: never returns
        os.close(r)
        _child(fn, w)
    os.close(w)
    reaped = False
    status = 0
    try:
        data = _read_all(r, time.monotonic() + timeout)
        if data is not None:
            # EOF: the child has written everything and is exiting.
            _, status = os.waitpid(pid, 0)
            reaped = True
    finally:
        os.close(r)
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    if data is None:
        raise NetnsTimeout(f"the namespace child gave no answer within {timeout:.3g} s")
    if not data:
        raise RuntimeError(f"the namespace child died without an answer (wait status {status})")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "unavailable":
        raise NetnsUnavailable(value)
    if isinstance(value, BaseException):
        raise value
    raise RuntimeError(str(value))


def _read_all(fd: int, end: float) -> bytes | None:
    """Everything the child writes, until EOF; None if `end` comes first."""
    chunks: list[bytes] = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _child(fn: Callable[[], Any], w: int) -> None:
    code = 0
    try:
        # The parent handles Ctrl-C (and kills us); the child just works or is killed.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            enter_new_netns()
            payload: tuple[str, Any] = ("ok", fn())
        except NetnsUnavailable as exc:
            payload = ("unavailable", str(exc))
        except BaseException as exc:  # sent to the parent, which re-raises it
            payload = ("error", exc)
        try:
            data = pickle.dumps(payload)
        except Exception as exc:  # an unpicklable result or exception
            data = pickle.dumps(("error", f"{type(exc).__name__}: {exc} ({payload[1]!r})"))
        view = memoryview(data)
        while view:
            n = os.write(w, view)
            view = view[n:]
    except BaseException:
        code = 1
    finally:
        os._exit(code)
