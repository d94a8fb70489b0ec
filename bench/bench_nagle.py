"""Start-up cost and `sockprobe nagle` duration (issue: foundation; issue 17: under 2 s
with the write-write-read fixes and the quick-ACK start, whose timer-bound parts run
side by side)."""

from __future__ import annotations

from common import PYTHON, SOCKPROBE, Result, interleaved_medians


def bench() -> list[Result]:
    m = interleaved_medians(
        {
            "python": [PYTHON, "-c", "import socket"],
            "version": [SOCKPROBE, "--version"],
            "help": [SOCKPROBE, "--help"],
        },
        runs=15,
    )
    base = m["python"]
    out = [
        Result(
            "sockprobe --version",
            m["version"],
            "s",
            "<= 6x bare python",
            m["version"] <= 6 * base,
            base,
            "python -c 'import socket'",
        ),
        Result(
            "sockprobe --help",
            m["help"],
            "s",
            "<= 10x bare python",
            m["help"] <= 10 * base,
            base,
            "python -c 'import socket'",
        ),
    ]
    nagle = interleaved_medians({"nagle": [SOCKPROBE, "nagle"]}, runs=3)["nagle"]
    out.append(Result("sockprobe nagle (defaults)", nagle, "s", "< 2 s", nagle < 2.0))
    return out
