"""Command-line options declared where they are used: on each probe's Params dataclass.

A probe's `Params` field becomes a command-line option through `option()`, which keeps
the help text, metavar and flag beside the default, so adding an experiment's option
touches one file (the probe's) and `cli.py` stays generic:

    @dataclass(frozen=True)
    class Params(ProbeParams):
        writes: int = option(100, "Back-to-back writes per mode.", metavar="N")
        modes: tuple[str, ...] = option(MODES, "Modes to run.", flag="--mode", choices=MODES)

- The flag is `--` plus the field name with `-` for `_`, unless `flag=` names one.
- A tuple default makes a repeatable option that also takes comma lists
  (`--mode nagle,cork --mode nodelay`).
- A bool default makes a switch (`--wait`); `negatable=True` adds `--no-NAME`.
- `positional=True` makes a positional argument; `const=` lets an option's value be left
  out (`--wait` alone means `--wait 60`).
- `cli=False` keeps a field off the command line (a progress callback, say).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OPTION_KEY = "sockprobe.option"


@dataclass(frozen=True)
class OptionSpec:
    help: str
    metavar: str | None = None
    flag: str | None = None
    short: str | None = None
    choices: tuple[str, ...] | None = None
    negatable: bool = False
    cli: bool = True
    #: A positional argument rather than a flag (port's PORT|PATH).
    positional: bool = False
    #: For an option whose value may be left out (`--wait [SECONDS]`): the value then.
    const: Any = None
    #: The element type of a tuple option (int, float, str), when the default is empty.
    item: type | None = None


def option(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    flag: str | None = None,
    short: str | None = None,
    choices: Sequence[str] | None = None,
    negatable: bool = False,
    item: type | None = None,
    cli: bool = True,
    positional: bool = False,
    const: Any = None,
) -> Any:
    """A dataclass field carrying its command-line option (see the module docstring)."""
    spec = OptionSpec(
        help=help,
        metavar=metavar,
        flag=flag,
        short=short,
        choices=tuple(choices) if choices is not None else None,
        negatable=negatable,
        cli=cli,
        item=item,
        positional=positional,
        const=const,
    )
    return dataclasses.field(default=default, metadata={OPTION_KEY: spec})


def spec_of(f: dataclasses.Field[Any]) -> OptionSpec | None:
    spec = f.metadata.get(OPTION_KEY)
    return spec if isinstance(spec, OptionSpec) else None
