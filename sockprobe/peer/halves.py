"""Imports every module that registers a server half (see steps.STEPS)."""

from sockprobe.peer import admission, bulk, segments, udp_path, wwr  # noqa: F401
