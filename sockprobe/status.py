"""Exit codes, the exceptions that carry them, and the one place that maps errors to codes.

Probes raise UsageError for bad parameters and Unsupported when the platform or the
process's privileges cannot run the experiment; everything else is a bug or an
environment failure and is reported as such (exit 1 with a one-line message).
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    #: `port --check`: a plain bind fails now; `diff`: fingerprints differ;
    #: `all`: some probe could not run; otherwise an unexpected error.
    FAILURE = 1
    USAGE = 2
    UNSUPPORTED = 3
    #: `--deadline` ran out before the probe finished.
    DEADLINE = 4
    INTERRUPTED = 130
    #: SIGTERM and SIGHUP end a probe as Ctrl-C does, with 128 + the signal number.
    TERMINATED = 143
    HANGUP = 129


class SockprobeError(Exception):
    """Base class for errors that sockprobe reports as one line."""

    status = ExitStatus.FAILURE


class UsageError(SockprobeError):
    """Bad input: an option out of range, an unknown host, an unreadable file."""

    status = ExitStatus.USAGE


class Unsupported(SockprobeError):
    """The probe cannot run here (platform, privilege)."""

    status = ExitStatus.UNSUPPORTED


class DeadlineExceeded(SockprobeError):
    """The probe's --deadline ran out before it finished."""

    status = ExitStatus.DEADLINE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread by the CLI's handler. A subclass of
    KeyboardInterrupt so that every cleanup path written for Ctrl-C runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class OutputError(SockprobeError):
    """The output channel failed (stdout closed, disk full): not a socket error."""


def errno_name(code: int | None) -> str | None:
    """111 -> "ECONNREFUSED"; None stays None, 0 is "0", an unknown number is its digits."""
    if code is None:
        return None
    if code == 0:
        return "0"
    return errno.errorcode.get(code, str(code))


def oserror_name(exc: OSError) -> str:
    """The errno name of a failed call ("EADDRINUSE"), or its class name when the
    exception carries no errno (a Python-level TimeoutError, for one)."""
    name = errno_name(exc.errno) if exc.errno else None
    return name or type(exc).__name__


def oserror_text(exc: OSError) -> str:
    """`ECONNREFUSED (Connection refused)`-style text that keeps the errno name."""
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{name} ({os.strerror(exc.errno)})"


_CODES = {int(c) for c in ExitStatus}


def _nofile() -> str:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return "RLIMIT_NOFILE"
    return f"RLIMIT_NOFILE is {soft}; raise it with ulimit -n"


def classify(exc: BaseException) -> tuple[ExitStatus, str]:
    """Map any exception to an exit status and a one-line message for stderr."""
    if isinstance(exc, Terminated):
        import signal

        name = signal.Signals(exc.signum).name
        return (
            ExitStatus(128 + exc.signum) if 128 + exc.signum in _CODES else ExitStatus.FAILURE,
            f"{name}: stopped; every socket, thread and child process was cleaned up",
        )
    if isinstance(exc, KeyboardInterrupt):
        return (
            ExitStatus.INTERRUPTED,
            "interrupted; every socket, thread and child process was cleaned up",
        )
    if isinstance(exc, SockprobeError):
        return exc.status, str(exc)
    if isinstance(exc, PermissionError):
        what = f" ({exc.filename})" if exc.filename else ""
        return ExitStatus.UNSUPPORTED, f"not permitted here{what}: {oserror_text(exc)}"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        # Out of descriptors is this process's or the system's limit, not a finding.
        return ExitStatus.UNSUPPORTED, f"out of file descriptors: {oserror_text(exc)} ({_nofile()})"
    if isinstance(exc, OSError):
        return ExitStatus.FAILURE, f"unexpected socket error: {oserror_text(exc)}"
    return ExitStatus.FAILURE, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)"
