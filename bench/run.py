"""`make bench`: run every bench/bench_*.py and print each goal with its measurement.

Each module exposes `bench() -> list[Result]`. Exit 1 if any goal was missed.
`python bench/run.py nagle port` runs only those modules.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv]
    missed = 0
    for name in names:
        print(f"== {name.removeprefix('bench_')}", flush=True)
        try:
            results = importlib.import_module(name).bench()
        except Exception as exc:  # a broken benchmark is a miss, and the rest still run
            print(f"MISS {name}: could not run: {type(exc).__name__}: {exc}")
            missed += 1
            continue
        for r in results:
            print(r.line(), flush=True)
            missed += not r.ok
    print(f"{missed} goal(s) missed" if missed else "every goal met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
