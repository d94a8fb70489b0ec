"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


def has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (tried, not assumed: containers often lack IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def interrupt(args: Sequence[str], after: float) -> tuple[int, str, float]:
    """Run `python -m sockprobe ARGS`, send SIGINT after `after` seconds, and return its
    exit status, stderr, and how long it took to exit after the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockprobe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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


def labelled(table: Any) -> list[dict[str, Any]]:
    """A table's rows keyed by column label, from a Table or its JSON form (schema 2).
    TRANSITIONAL: tests move to column keys as each probe gets stable ones."""
    if isinstance(table, dict):
        cols = [(c["key"], c["label"]) for c in table["columns"]]
        return [{label: r.get(key) for key, label in cols} for r in table["rows"]]
    return [{c.label: r.get(c.key) for c in table.columns} for r in table.rows]
