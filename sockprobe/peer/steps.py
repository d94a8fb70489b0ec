"""What the agent may run for a controller: server halves with validated parameters.

A server half is named (`tcp_echo`), takes only the parameters its rules list (numbers
within bounds, booleans, choices from a list: never a command, a path or an address),
listens only on the agent's own address, accepts data connections only from the
controller's address, and is bounded in connections, bytes and time. Everything it opens
lives in a Lab, which closes it on finish, on error and when the controller vanishes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sockprobe.lab import Deadline, Host, Lab

#: Hard bounds on any one step, whatever its parameters say.
STEP_SECONDS = 60.0
STEP_BYTES = 256 * 1024 * 1024
STEP_CONNECTIONS = 4096


class StepError(Exception):
    """A step request the agent refuses: unknown, bad parameters, out of order."""


@dataclass(frozen=True)
class Rule:
    kind: type
    lo: float | None = None
    hi: float | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            return self.default
        if self.kind is bool:
            if not isinstance(value, bool):
                raise StepError(f"parameter {name!r} must be true or false")
            return value
        if self.kind in (int, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if self.kind is int:
                ok = ok and float(value).is_integer()
            if not ok or value != value:
                raise StepError(f"parameter {name!r} must be a number")
            if (self.lo is not None and value < self.lo) or (
                self.hi is not None and value > self.hi
            ):
                raise StepError(f"parameter {name!r} must be {self.lo:g}..{self.hi:g}")
            return self.kind(value)
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise StepError(f"parameter {name!r} must be one of {self.choices}")
            return value
        raise StepError(f"parameter {name!r} has no rule")


def validate(params: Any, rules: dict[str, Rule]) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise StepError("params must be an object")
    unknown = sorted(set(params) - set(rules))
    if unknown:
        raise StepError(f"unknown parameters {unknown}")
    return {name: rule.check(name, params.get(name)) for name, rule in rules.items()}


class ServerHalf:
    """Base of a step: `start()` opens and replies with what to connect to, `finish()`
    returns the measurements, `close()` releases everything (always called)."""

    name: ClassVar[str] = ""
    rules: ClassVar[dict[str, Rule]] = {}

    def __init__(self, bind: Host, controller: str, params: dict[str, Any]) -> None:
        self.controller = controller
        self.p = params
        seconds = min(STEP_SECONDS, float(params.get("seconds") or STEP_SECONDS))
        self.lab = Lab(bind, Deadline(seconds))

    def start(self) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self.lab.cleanup()

    # -- helpers for the halves -----------------------------------------------------
    def listener(
        self, backlog: int = 1, configure: Callable[[socket.socket], None] | None = None
    ) -> socket.socket:
        return self.lab.listener(backlog=backlog, configure=configure, role=f"{self.name} listener")

    def accept(self, lst: socket.socket, timeout: float) -> socket.socket:
        """The next connection from the controller's address; any other is closed at
        once (the agent serves one controller, never a third party)."""
        end = time.monotonic() + timeout
        while True:
            left = min(end - time.monotonic(), self.lab.deadline.remaining())
            if left <= 0:
                raise TimeoutError("no data connection from the controller in time")
            lst.settimeout(left)
            conn, addr = lst.accept()
            if addr[0] == self.controller:
                self.lab.adopt(conn)
                return conn
            conn.close()


#: name -> ServerHalf subclass; filled by `register`.
STEPS: dict[str, type[ServerHalf]] = {}


def register(cls: type[ServerHalf]) -> type[ServerHalf]:
    STEPS[cls.name] = cls
    return cls


def load_steps() -> None:
    """Import the modules that define server halves (each registers its own)."""
    from sockprobe.peer import halves  # noqa: F401
