"""`--peer` over the delay line (issue 19): a run across the path costs at most the
loopback run's time plus the path's inherent waits.

The inherent waits are computed from what the run itself measured: the path RTT (the
fastest TCP_NODELAY round) times the control exchanges and connects the run makes, plus
every write-write-read round it timed (those rounds are the experiment: Nagle's stall
across a path is the finding, not overhead). Needs root for the namespaces; without it
the goal is reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import SOCKPROBE, Result, run_once

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pathlab

DELAY_MS = 10.0
ROUNDS = 20
#: Control exchanges of one nagle --peer run: hello, and for each of two steps a start
#: and a finish; plus two data connects (one RTT each).
EXCHANGES = 1 + 2 * 2 + 2


def bench() -> list[Result]:
    reason = pathlab.skip_reason()
    if reason is not None:
        return [Result(f"nagle --peer (skipped: {reason})", 0.0, "s", "n/a", True)]
    loop = min(run_once([SOCKPROBE, "nagle", "--rounds", str(ROUNDS)]) for _ in range(3))
    with pathlab.Path2(delay_ms=DELAY_MS) as p:
        agent = p.popen_b("serve", "--bind", pathlab.B_ADDR, "--token", "bench-token-0")
        assert agent.stdout is not None
        agent.stdout.readline()
        t0 = time.perf_counter()
        r = p.run_a(
            "nagle",
            "--rounds",
            str(ROUNDS),
            "--peer",
            f"{pathlab.B_ADDR}:7380",
            "--token",
            "bench-token-0",
            "--json",
        )
        took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    doc = json.loads(r.stdout)
    rows = {row["mode"]: row for row in doc["tables"][0]["rows"]}
    rtt = rows["nodelay"]["min_ms"] / 1000
    # Every round's time is an inherent wait; the medians times the rounds stand in
    # for their sum (the table keeps medians, min and max).
    rounds = sum(rows[m]["median_ms"] for m in rows) / 1000 * ROUNDS
    inherent = EXCHANGES * rtt + rounds
    budget = loop + inherent
    return [
        Result(
            f"nagle --peer over a {2 * DELAY_MS:g} ms RTT delay line",
            took,
            "s",
            f"<= loopback run + inherent waits = {loop:.2f} + {inherent:.2f} s",
            took <= budget,
            baseline=loop,
            baseline_name="the loopback nagle run",
        )
    ]
