"""The one list of engines: each name with its factory and a one-line description.

``WriteOptions`` validates ``engine=`` against :data:`ENGINE_NAMES`, the IO classes and the
command line offer the same names, and :func:`make_engine` builds the engine a name stands
for. An engine's module is imported only when that engine is made, so naming ``gpu`` or
``dask`` here imports neither cupy nor distributed (invariant 6). Adding an engine is one
entry below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..options import WriteOptions
    from .base import Engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineEntry:
    """One engine: what ``engine=name`` builds, and what it is, in one line."""

    name: str
    summary: str
    factory: Callable[[WriteOptions], Engine]


def choose_auto_engine() -> tuple[str, str]:
    """The engine ``auto`` picks on this machine, and why."""
    from ..gpu.status import gpu_status

    status = gpu_status()
    if status.available:
        from ..gpu.routing import cpu_worker_count
        from ..options import WriteOptions

        defaults = WriteOptions()
        workers, _ = cpu_worker_count(defaults.gpu_cpu_helpers, defaults.gpu_streams)
        return "gpu", (
            f"GPU engine: {status.device_name} with nvCOMP {status.nvcomp_version}; {defaults.gpu_streams} GPU lanes "
            f"and {workers} CPU workers on one queue, datasets routed by chain and layout"
        )
    return "threads", f"CPU thread pool: no usable GPU ({status.reason})"


def _auto(options: WriteOptions) -> Engine:
    name, reason = choose_auto_engine()
    logger.info("engine='auto' chose %s", reason)
    return ENGINES[name].factory(options)


def _threads(options: WriteOptions) -> Engine:
    from .threads import ThreadEngine

    return ThreadEngine(options.workers)


def _processes(options: WriteOptions) -> Engine:
    from .processes import ProcessEngine

    return ProcessEngine(options.workers, options.mp_context, options.max_threads_per_process, options.tune_malloc)


def _serial(options: WriteOptions) -> Engine:
    from .serial import SerialEngine

    return SerialEngine()


def _gpu(options: WriteOptions) -> Engine:
    from ..gpu.status import gpu_status

    status = gpu_status()
    if not status.available:  # a bad argument for this machine, refused before anything is written
        raise ValueError(f"engine='gpu' needs a usable NVIDIA GPU with nvCOMP: {status.reason}")
    from ..gpu.engine import GpuEngine
    from .base import capped_workers, thread_limit

    writers = capped_workers(options.workers, thread_limit(), "GPU writer threads", "as for engine='threads'")
    return GpuEngine.create(options if writers == options.workers else replace(options, max_workers=writers))


def _dask(options: WriteOptions) -> Engine:
    from .dask import DaskEngine  # imports distributed only when asked for

    return DaskEngine.create(options)


ENGINES: dict[str, EngineEntry] = {
    entry.name: entry
    for entry in (
        EngineEntry(
            "auto",
            "the GPU engine (GPU lanes and CPU workers on one queue) where a GPU and nvCOMP are usable, "
            "else threads (the choice is logged)",
            _auto,
        ),
        EngineEntry("threads", "a thread pool in this process: any iterator, any store, no pickling", _threads),
        EngineEntry("processes", "worker processes, for iterators whose reading holds the GIL", _processes),
        EngineEntry("serial", "one chunk at a time in the calling thread, like stock hdmf-zarr", _serial),
        EngineEntry(
            "gpu", "nvCOMP on CUDA streams and CPU workers on one queue, each dataset routed by chain and layout", _gpu
        ),
        EngineEntry("dask", "the workers of a distributed.Client (GPU encoding on GPU workers)", _dask),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)


def make_engine(options: WriteOptions) -> Engine:
    """The engine ``options.engine`` names; an engine that cannot run here refuses now, before any write."""
    entry = ENGINES.get(options.engine)
    if entry is None:
        raise ValueError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINE_NAMES)}")
    return entry.factory(options)
