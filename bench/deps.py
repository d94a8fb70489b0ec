"""The numbers behind pyproject.toml's dependency choices: start-up of each CLI framework's
import and the install size of each dependency with what it pulls in.

    python bench/deps.py [REQUIREMENT ...]   (default: typer click tabulate psutil)

Each package is installed into a fresh, throwaway venv (from whatever index pip is
configured with); the size is that venv's site-packages growth, .pyc files included (pip
compiles them at install). Start-up is the best of RUNS wall times of
`python -I -c 'import X'` in that venv: the best, not the median, because on a shared
machine every other process can only add time, never remove it. `-c pass` and
`import argparse` (stdlib) are measured the same way as the baselines.
Not part of `make bench`: it needs the package index and takes a minute.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

RUNS = 15
#: The module each distribution is imported as.
MODULES = {"typer": "typer", "click": "click", "tabulate": "tabulate", "psutil": "psutil"}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _best(python: str, code: str) -> float:
    times = []
    for _ in range(RUNS + 1):  # the first run warms the page cache and is dropped
        t0 = time.perf_counter()
        subprocess.run([python, "-I", "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def _site(env: Path) -> Path:
    (site,) = env.glob("lib/python3*/site-packages")
    return site


def main(argv: list[str]) -> int:
    packages = argv or list(MODULES)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        venv.create(base, with_pip=True)
        python = str(base / "bin" / "python")
        empty = _size(_site(base))
        print(f"python {sys.version.split()[0]}; best of {RUNS} runs")
        print(f"{'-c pass':<22} {_best(python, 'pass') * 1000:7.1f} ms")
        print(f"{'import argparse':<22} {_best(python, 'import argparse') * 1000:7.1f} ms")
        for pkg in packages:
            env = Path(tmp) / pkg
            venv.create(env, with_pip=True)
            py = str(env / "bin" / "python")
            subprocess.run(
                [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", pkg],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            grown = _size(_site(env)) - empty
            name = re.split(r"[<>=!~ ]", pkg)[0]
            t = _best(py, f"import {MODULES.get(name, name)}")
            print(f"{'import ' + pkg:<22} {t * 1000:7.1f} ms   installs {grown / 2**20:5.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
