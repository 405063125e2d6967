"""Engines and the choice of one: ``auto`` prefers the GPU, else a CPU thread pool."""

from __future__ import annotations

import logging
from dataclasses import replace

from ..options import WriteOptions
from .base import Engine, capped_workers, thread_limit
from .processes import ProcessEngine
from .serial import SerialEngine
from .threads import ThreadEngine

logger = logging.getLogger(__name__)

__all__ = ["Engine", "ProcessEngine", "SerialEngine", "ThreadEngine", "choose_auto_engine", "make_engine"]


def choose_auto_engine() -> tuple[str, str]:
    """The engine ``auto`` picks on this machine, and why."""
    from ..gpu.status import gpu_status

    status = gpu_status()
    if status.available:
        return "gpu", f"GPU engine: {status.device_name} with nvCOMP {status.nvcomp_version}"
    return "threads", f"CPU thread pool: no usable GPU ({status.reason})"


def make_engine(options: WriteOptions) -> Engine:
    name = options.engine
    if name == "auto":
        name, reason = choose_auto_engine()
        logger.info("engine='auto' chose %s", reason)
    if name == "serial":
        return SerialEngine()
    if name == "threads":
        return ThreadEngine(options.workers)
    if name == "processes":
        return ProcessEngine(options.workers, options.mp_context, options.max_threads_per_process)
    if name == "gpu":
        from ..gpu.status import gpu_status

        status = gpu_status()
        if not status.available:  # a bad argument for this machine, refused before anything is written
            raise ValueError(f"engine='gpu' needs a usable NVIDIA GPU with nvCOMP: {status.reason}")
        from ..gpu.engine import GpuEngine

        writers = capped_workers(options.workers, thread_limit(), "GPU writer threads", "as for engine='threads'")
        return GpuEngine.create(options if writers == options.workers else replace(options, max_workers=writers))
    if name == "dask":
        from .dask import DaskEngine  # imports distributed only when asked for

        return DaskEngine.create(options)
    raise ValueError(f"unknown engine {name!r}")
