"""`python -m sockprobe` and the `sockprobe` console script."""

from __future__ import annotations

import sys


def main() -> None:
    # `--version` is answered before the CLI framework is imported: it is what scripts
    # and health checks call most, and typer's import costs several times Python's start.
    if sys.argv[1:] == ["--version"]:
        from sockprobe import __version__

        sys.stdout.write(f"sockprobe {__version__}\n")
        sys.exit(0)
    # `port` skips typer too when its arguments are plain ones (see fastport.py: the
    # typer command would import pydantic, ~100 ms); anything else falls through.
    if sys.argv[1:2] == ["port"]:
        from sockprobe.fastport import fast_main

        code = fast_main(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    from sockprobe.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
