"""`python -m sockprobe.port TARGET [options]`: a minimal stand-in for the CLI, for this
package's tests of real process behaviour (terminal prompt, exit codes, JSON with the
top-level `free` and `holders`) until the generic CLI is on main. It wires run() the way
docs/port.md asks the CLI to."""

from __future__ import annotations

import argparse
import json
import os
import sys

from sockprobe.port import WAIT_UNTIL_DEADLINE, Params, run
from sockprobe.status import classify


def _progress(line: str) -> None:
    # Terminal only (checked by the caller); no escape codes when TERM=dumb or NO_COLOR.
    plain = os.environ.get("TERM") == "dumb" or "NO_COLOR" in os.environ
    sys.stderr.write(line + "\n" if plain else "\r\x1b[K" + line)
    sys.stderr.flush()


def _confirm(text: str) -> bool:
    sys.stderr.write(text + "\nProceed? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="sockprobe port")
    ap.add_argument("target")
    for flag in (
        "--tcp",
        "--udp",
        "--check",
        "--reuseaddr",
        "--kill",
        "--force",
        "--all-netns",
        "--json",
    ):
        ap.add_argument(flag, action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("-y", "--yes", action="store_true")
    ap.add_argument("--wait", nargs="?", type=float, const=WAIT_UNTIL_DEADLINE, default=None)
    ap.add_argument("--signal", default="TERM")
    ap.add_argument("--grace", type=float, default=3.0)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--deadline", type=float, default=30.0)
    a = ap.parse_args(argv)
    try:
        params = Params(
            target=a.target,
            tcp=a.tcp,
            udp=a.udp,
            check=a.check,
            reuseaddr=a.reuseaddr,
            quiet=a.quiet,
            wait=a.wait,
            kill=a.kill,
            yes=a.yes,
            signal=a.signal,
            grace=a.grace,
            force=a.force,
            all_netns=a.all_netns,
            limit=a.limit,
            host=a.host,
            deadline=a.deadline,
            progress=_progress if sys.stderr.isatty() and not a.quiet else None,
            confirm=_confirm if sys.stdin.isatty() and sys.stderr.isatty() else None,
        )
        result = run(params)
    except (Exception, KeyboardInterrupt) as exc:
        status, message = classify(exc)
        sys.stderr.write(f"sockprobe: {message}\n")
        return int(status)
    if not params.quiet:
        if a.json:
            doc = result.report.to_dict()
            doc.update(result.data)
            if result.actions:
                doc["actions"] = result.actions
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            from sockprobe.render import render

            sys.stdout.write(render(result.report, "table"))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
