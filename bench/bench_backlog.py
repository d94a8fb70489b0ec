"""`sockprobe backlog` duration (issue 4): defaults under 2 s, `--backlog 1024` under 5 s,
and the largest backlog somaxconn allows here (4096 by default) for reference."""

from __future__ import annotations

from common import PYTHON, SOCKPROBE, Result, interleaved_medians


def bench() -> list[Result]:
    m = interleaved_medians(
        {
            "python": [PYTHON, "-c", "import socket"],
            "defaults": [SOCKPROBE, "backlog"],
            "1024": [SOCKPROBE, "backlog", "--backlog", "1024"],
            "4096": [SOCKPROBE, "backlog", "--backlog", "4096"],
        },
        runs=5,
    )
    base = m["python"]
    return [
        Result(
            "sockprobe backlog (defaults: 0, 1, 8, 128)",
            m["defaults"],
            "s",
            "< 2 s",
            m["defaults"] < 2.0,
            base,
            "python -c 'import socket'",
        ),
        Result(
            "sockprobe backlog --backlog 1024 (1032 connects)",
            m["1024"],
            "s",
            "< 5 s",
            m["1024"] < 5.0,
            base,
            "python -c 'import socket'",
        ),
        Result(
            "sockprobe backlog --backlog 4096 (clamped to somaxconn; + 8 connects)",
            m["4096"],
            "s",
            "< 5 s",
            m["4096"] < 5.0,
            base,
            "python -c 'import socket'",
        ),
    ]
