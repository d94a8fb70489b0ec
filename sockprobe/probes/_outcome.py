"""What one socket call did, recorded so that probes can report it: its return value or
exception, the errno name, and how long it took. Shared by the timeouts and close probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockprobe.status import errno_name

__all__ = ["Attempt", "attempt", "errno_name", "result_errno", "result_text", "show_value"]


@dataclass
class Attempt:
    """What one socket call did: its return value or exception, and how long it took."""

    value: Any = None
    error: BaseException | None = None
    elapsed_s: float = 0.0
    #: The call was still blocked after the wake-up wait and shutdown() woke it.
    woken_after: float | None = None


def attempt(fn: Callable[[], Any]) -> Attempt:
    """Run one call and keep whatever it returned or raised, with its duration."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # the exception *is* the measurement
        return Attempt(error=exc, elapsed_s=time.perf_counter() - t0)
    return Attempt(value=value, elapsed_s=time.perf_counter() - t0)


def show_value(value: Any) -> str:
    """A deterministic rendering of a return value: b'' stays b'', long data is a size."""
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value)) if len(value) <= 16 else f"{len(value)} bytes"
    if isinstance(value, tuple) and value and value[0] == "connection":
        return "a connection"
    return repr(value)


def result_text(a: Attempt) -> str:
    if a.error is not None:
        return f"raised {type(a.error).__name__}"
    return f"returned {show_value(a.value)}"


def result_errno(a: Attempt, call: str = "") -> str | None:
    """The errno name of an exception, or of connect_ex()'s return value."""
    if a.error is not None:
        return errno_name(getattr(a.error, "errno", None))
    if call == "connect_ex" and isinstance(a.value, int):
        return errno_name(a.value)
    return None
