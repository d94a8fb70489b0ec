"""`python -m sockprobe` and the `sockprobe` console script."""

from __future__ import annotations

import sys

INTERRUPTED = 130  # status.ExitStatus.INTERRUPTED, without importing anything yet


def main() -> None:
    try:
        from sockprobe.cli import main as cli_main

        code = cli_main(sys.argv[1:])
    except KeyboardInterrupt:
        # Ctrl-C before the CLI's own handling starts (while modules are importing) or
        # after it ends: nothing is open yet, or everything is closed already.
        sys.stderr.write("sockprobe: interrupted\n")
        code = INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
