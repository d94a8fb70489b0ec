"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (tried, not assumed: containers often lack IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def sigint_default() -> None:
    """In the child before exec: SIGINT back to its default disposition. A test run in the
    background of a non-interactive shell (or under nohup) inherits SIGINT ignored, and
    Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at
    start-up (signal(7): ignored dispositions survive execve), so the signal would
    otherwise be lost and the probe would run to its end with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(args: Sequence[str], after: float) -> tuple[int, str, float]:
    """Run `python -m sockprobe ARGS`, send SIGINT after `after` seconds, and return its
    exit status, stderr, and how long it took to exit after the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockprobe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    try:
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err, took
