"""The CLI's standard streams and what it shows on them besides reports: terminal width
and encoding, progress lines on stderr (terminal only), the --kill question, event lines."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO

from sockprobe.status import OutputError


class StdoutGone(Exception):
    """The reader of stdout went away (EPIPE on our output, not on a probe's socket)."""


class Output:
    """stdout and stderr, with the terminal facts rendering needs. Injected for tests."""

    def __init__(self, stdout: IO[str] | None, stderr: IO[str] | None) -> None:
        self.out = stdout
        self.err = stderr or sys.__stderr__

    @property
    def is_tty(self) -> bool:
        try:
            return bool(self.out is not None and self.out.isatty())
        except (ValueError, OSError):
            return False

    def width(self, forced: int | None) -> int | None:
        if forced is not None:
            return forced
        if not self.is_tty:
            return None
        try:
            return os.get_terminal_size(self.out.fileno()).columns  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            cols = os.environ.get("COLUMNS", "")
            return int(cols) if cols.isdigit() else 80

    @property
    def unicode(self) -> bool:
        enc = (getattr(self.out, "encoding", None) or "").lower().replace("-", "")
        return enc in ("utf8", "utf8sig")

    def write(self, text: str) -> None:
        if self.out is None:
            raise OutputError("cannot write the output: standard output is closed")
        if not self.unicode:
            from sockprobe.render import to_ascii

            enc = getattr(self.out, "encoding", None) or "ascii"
            text = to_ascii(text).encode(enc, errors="replace").decode(enc)
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            raise StdoutGone() from None
        except OSError as exc:
            from sockprobe.status import oserror_text

            raise OutputError(f"cannot write the output: {oserror_text(exc)}") from None

    def progress_mode(self) -> str | None:
        """None when stderr is not a terminal (no progress at all); "plain" (one line
        each time) with TERM=dumb or NO_COLOR; "ansi" (one line rewritten in place)."""
        try:
            tty = bool(self.err is not None and self.err.isatty())
        except (ValueError, OSError):
            tty = False
        if not tty:
            return None
        if os.environ.get("TERM") == "dumb" or "NO_COLOR" in os.environ:
            return "plain"
        return "ansi"

    def progress_ok(self) -> bool:
        return self.progress_mode() is not None

    def interactive(self) -> bool:
        """Whether a question may be asked: stdin and stderr are terminals."""
        try:
            return bool(
                sys.stdin is not None
                and sys.stdin.isatty()
                and self.err is not None
                and self.err.isatty()
            )
        except (ValueError, OSError):
            return False


def progress_line(io: Output) -> Callable[[str], None]:
    """A progress callback for stderr on a terminal: one line rewritten in place, or,
    with TERM=dumb or NO_COLOR, each new line written plainly (no escape codes)."""
    mode = io.progress_mode()
    last = [""]

    def progress(text: str) -> None:
        assert io.err is not None
        if mode == "ansi":
            io.err.write(f"\r\x1b[K{text}" if text else "\r\x1b[K")
        elif text and text != last[0]:
            io.err.write(text + "\n")
        last[0] = text
        io.err.flush()

    return progress


def event_stream(io: Output, event: str) -> Callable[[str], None]:
    import json
    import time

    t0 = time.monotonic()
    last = [""]

    def emit(text: str) -> None:
        if text and text != last[0]:
            io.write(
                json.dumps({"event": event, "t_s": round(time.monotonic() - t0, 3), "text": text})
                + "\n"
            )
        last[0] = text

    return emit


def ask(io: Output) -> Callable[[str], bool]:
    """--kill's question on a terminal: the plan, then "Proceed? [y/N]"."""

    def confirm(text: str) -> bool:
        assert io.err is not None
        io.err.write(f"{text}\nProceed? [y/N] ")
        io.err.flush()
        answer = sys.stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    return confirm
