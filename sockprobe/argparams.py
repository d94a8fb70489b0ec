"""Command-line parsing from a Params dataclass (the fields' `option()` metadata, see
options.py): one argparse option per field, with converters that give one-line errors,
repeatable options that take comma lists, and a parser that raises instead of exiting
so that the CLI turns every outcome into one exit status."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, NoReturn

from sockprobe.options import OptionSpec, spec_of


class UsageText(Exception):
    """argparse's complaint, raised instead of its print-and-exit."""


class Parser(argparse.ArgumentParser):
    def print_help(self, file: Any = None) -> None:
        """Help is written by the dispatcher (to the injected stdout), not here."""

    def error(self, message: str) -> NoReturn:
        raise UsageText(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageText(message.strip())
        raise HelpShown(status)


class HelpShown(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _flag(f: dataclasses.Field[Any], spec: OptionSpec | None) -> str:
    if spec is not None and spec.flag:
        return spec.flag
    return "--" + f.name.replace("_", "-")


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(type, optional) of a field annotation: `int | None` -> (int, True)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def converter(kind: Any, flag: str) -> Callable[[str], Any]:
    def conv(text: str) -> Any:
        try:
            if kind is int:
                value: Any = int(text.strip())
            elif kind is float:
                value = float(text.strip())
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
            else:
                return text
        except ValueError:
            shown = text if len(text) <= 40 else text[:37] + "..."
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"{flag} wants {what}, not {shown!r}") from None
        return value

    return conv


def _metavar(kind: Any, spec: OptionSpec | None, name: str) -> str:
    if spec is not None and spec.metavar:
        return spec.metavar
    if name in ("deadline",) or name.endswith("timeout"):
        return "SECONDS"
    return {int: "N", float: "SECONDS"}.get(kind, name.upper())


def default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "none"
    return str(value)


class _Append(argparse.Action):
    """A repeatable option that also takes comma lists; the first use replaces the
    default. Each item is converted and checked here (argparse would see '0,8' whole)."""

    convert: Callable[[str], Any] = str
    allowed: tuple[Any, ...] | None = None

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = getattr(namespace, "_seen_" + self.dest, False)
        current = list(getattr(namespace, self.dest)) if seen else []
        for part in str(values).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                item = self.convert(part)
            except argparse.ArgumentTypeError as exc:
                raise UsageText(str(exc)) from None
            if self.allowed is not None and item not in self.allowed:
                raise UsageText(
                    f"{option_string} {part!r}: choose from {', '.join(map(str, self.allowed))}"
                )
            current.append(item)
        setattr(namespace, self.dest, tuple(current))
        setattr(namespace, "_seen_" + self.dest, True)


def append_action(convert: Callable[[str], Any], allowed: tuple[Any, ...] | None) -> type[_Append]:
    return type("_AppendItems", (_Append,), {"convert": staticmethod(convert), "allowed": allowed})


def add_params(parser: argparse.ArgumentParser, params_cls: type) -> list[str]:
    """Add one option per field of `params_cls`; return the field names added."""
    hints = typing.get_type_hints(params_cls)
    names: list[str] = []
    for f in dataclasses.fields(params_cls):
        spec = spec_of(f)
        if spec is not None and not spec.cli:
            continue
        hint, optional = _base_type(hints.get(f.name, str))
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = spec.help if spec is not None else f.name.replace("_", " ")
        flag = _flag(f, spec)
        flags = [flag] + ([spec.short] if spec is not None and spec.short else [])
        if spec is not None and spec.positional:
            parser.add_argument(
                f.name,
                metavar=_metavar(hint, spec, f.name),
                nargs="+" if typing.get_origin(hint) is tuple else None,
                help=help_text,
            )
            names.append(f.name)
            continue
        if hint is bool:
            if spec is not None and spec.negatable:
                parser.add_argument(
                    *flags,
                    dest=f.name,
                    action=argparse.BooleanOptionalAction,
                    default=default,
                    help=f"{help_text} (default: {'on' if default else 'off'})",
                )
            else:
                parser.add_argument(*flags, dest=f.name, action="store_true", help=help_text)
            names.append(f.name)
            continue
        if typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            item = spec.item if spec is not None and spec.item else (args[0] if args else str)
            parser.add_argument(
                *flags,
                dest=f.name,
                action=append_action(
                    converter(item, flag), spec.choices if spec is not None else None
                ),
                default=default,
                metavar=_metavar(item, spec, f.name.rstrip("s")),
                help=f"{help_text} Repeatable, or a comma list (default: {default_text(default)}).",
            )
            names.append(f.name)
            continue
        if hint not in (int, float, str):
            continue  # callables and other non-CLI values
        kwargs: dict[str, Any] = {}
        if spec is not None and spec.const is not None:
            kwargs.update(nargs="?", const=spec.const)
        parser.add_argument(
            *flags,
            dest=f.name,
            type=converter(hint, flag),
            default=default,
            choices=spec.choices if spec is not None else None,
            metavar=_metavar(hint, spec, f.name),
            help=help_text
            if "default" in help_text.lower()
            else f"{help_text} (default: {default_text(default)}"
            + (f"; {spec.const} when given alone" if spec is not None and spec.const else "")
            + ")",
            **kwargs,
        )
        del optional
        names.append(f.name)
    return names
