"""close's options (the CLI imports this module to build its parser: keep it light)."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.probes import ProbeParams


@dataclass(frozen=True)
class Params(ProbeParams):
    """Only the shared options: the scenarios are fixed."""
