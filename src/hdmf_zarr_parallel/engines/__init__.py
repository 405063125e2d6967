"""Engines: where the work of a write runs. :mod:`.registry` lists them; ``auto`` prefers the GPU, else threads.

The CPU engines are importable from here; ``gpu`` and ``dask`` are imported only when made
(:func:`make_engine`), so importing this package never imports cupy, nvCOMP or distributed.
"""

from __future__ import annotations

from .base import Engine, Route
from .processes import ProcessEngine
from .registry import ENGINE_NAMES, ENGINES, choose_auto_engine, make_engine
from .serial import SerialEngine
from .threads import ThreadEngine

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "Engine",
    "ProcessEngine",
    "Route",
    "SerialEngine",
    "ThreadEngine",
    "choose_auto_engine",
    "make_engine",
]
