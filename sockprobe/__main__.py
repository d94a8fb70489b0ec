"""`python -m sockprobe` and the `sockprobe` console script."""

from __future__ import annotations

import sys

INTERRUPTED = 130  # status.ExitStatus.INTERRUPTED, without importing anything yet


def _run(argv: list[str]) -> int:
    # `--version` is answered before the CLI framework is imported: it is what scripts
    # and health checks call most, and typer's import costs several times Python's start.
    if argv == ["--version"]:
        from sockprobe import __version__

        sys.stdout.write(f"sockprobe {__version__}\n")
        return 0
    # `port` skips typer too when its arguments are plain ones (see fastport.py: typer's
    # import and command building cost ~30 ms); anything else falls through.
    if argv[:1] == ["port"]:
        from sockprobe.fastport import fast_main

        code = fast_main(argv[1:])
        if code is not None:
            return code
    from sockprobe.cli import main as cli_main

    return cli_main(argv)


def main() -> None:
    try:
        code = _run(sys.argv[1:])
    except KeyboardInterrupt:
        # Ctrl-C before the CLI's own handling starts (while modules are importing) or
        # after it ends: nothing is open yet, or everything is closed already.
        sys.stderr.write("sockprobe: interrupted\n")
        code = INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
