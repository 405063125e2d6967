"""Engines: where the work of a write runs. :mod:`.registry` lists them; ``auto`` prefers the GPU, else threads."""

from __future__ import annotations

from .base import Engine, Route
from .registry import ENGINE_NAMES, ENGINES, choose_auto_engine, make_engine

__all__ = ["ENGINES", "ENGINE_NAMES", "Engine", "Route", "choose_auto_engine", "make_engine"]
