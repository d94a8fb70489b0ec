"""Shared fixtures. `no_leaks` runs around every test: a probe must leave no file
descriptor, thread or child process behind, on success or on error."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psutil
import pytest


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used is gone by now
            continue
    return out


def _snapshot() -> tuple[dict[int, str], set[threading.Thread], set[int]]:
    children = {c.pid for c in psutil.Process().children(recursive=True)}
    return _fds(), set(threading.enumerate()), children


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    if not os.path.isdir("/proc/self/fd"):
        yield
        return
    fds0, threads0, kids0 = _snapshot()
    yield
    # A worker that is being joined may need a moment; nothing should need more.
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        fds1, threads1, kids1 = _snapshot()
        new_fds = {fd: t for fd, t in fds1.items() if fds0.get(fd) != t}
        new_threads = {t for t in threads1 - threads0 if t.is_alive()}
        new_kids = {
            p
            for p in kids1 - kids0
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        }
        if not (new_fds or new_threads or new_kids):
            return
        time.sleep(0.05)
    problems = []
    if new_fds:
        problems.append(f"file descriptors left open: {new_fds}")
    if new_threads:
        problems.append(f"threads left running: {[t.name for t in new_threads]}")
    if new_kids:
        problems.append(f"child processes left running: {sorted(new_kids)}")
    pytest.fail("; ".join(problems))


@pytest.fixture
def netns() -> object:
    """The namespace runner (tests/netns.py), or a skip with the reason it cannot run."""
    import netns as runner

    reason = runner.netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return runner
