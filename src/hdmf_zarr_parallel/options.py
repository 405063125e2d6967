"""The user-facing write settings, validated once before any data moves.

:class:`WriteOptions` is the one place they are named and documented: the IO classes take
each of its fields as a keyword argument (except those hdmf-zarr's own ``write()`` arguments
set, see :data:`FROM_WRITE_ARGUMENTS`), and the engine names come from the engine registry.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .engines.registry import ENGINE_NAMES

ENGINES = ENGINE_NAMES  # the names engine= accepts, as the registry lists them
DEFAULT_GPU_BATCH_BYTES = 128 << 20  # enough chunks per nvCOMP call to keep a data-center GPU busy (docs/gpu.md)
DEFAULT_MAX_INFLIGHT_BYTES = 1 << 30  # 1 GiB: a few hundred chunks in flight, far below a workstation's RAM


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


FROM_WRITE_ARGUMENTS = "from_write_arguments"  # field metadata: set by hdmf-zarr's write() arguments


@dataclass(frozen=True)
class WriteOptions:
    """How a write runs. Every field but two is also a keyword argument of the IO classes.

    - ``engine``: where the work runs, one of :data:`ENGINES` (see
      :mod:`hdmf_zarr_parallel.engines.registry`); ``"auto"`` uses the GPU where one is usable,
      else threads, and logs its choice.
    - ``max_workers``: worker threads or processes (and the GPU engine's writer threads);
      ``None``: one per CPU core. Absurd counts are capped (threads: 32 per core, processes:
      one per core), with a warning.
    - ``max_inflight_bytes``: the bound on data read but not yet stored; a chunk or shard that
      cannot fit is refused before any data moves.
    - ``progress``: one tqdm bar over the bytes of each write; a dict passes tqdm options.
    - ``gpu_batch_bytes``: ``engine="gpu"``: uncompressed bytes per nvCOMP batch (one tile).
    - ``gpu_streams``: ``engine="gpu"``: lanes (threads, each with its own CUDA stream).
    - ``gpu_cpu_helpers``: ``engine="gpu"``: CPU worker threads that take tasks from the lanes' queue
      and encode with the array's zarr codecs. ``None``: one per CPU core the lanes leave
      (at least one), sharing the GPU-routed work; ``0``: no sharing, the lanes write every
      GPU-routed dataset (the datasets routed to the CPU still get that automatic count);
      ``N``: N workers, sharing.
    - ``client``: ``engine="dask"``: the ``distributed.Client`` (``None``: the current client).
    - ``dask_gpu``: ``engine="dask"``: whether workers encode on their GPU: ``"auto"`` (where one
      is usable), ``"never"`` or ``"always"``.
    - ``concurrent_reads``: whether several workers may read one iterator at once (``None``: each
      iterator's own ``concurrent_reads`` attribute decides, else the registry of known-safe
      iterator classes; without either, one read at a time).
    - ``read_timeout``: seconds (``None``: no limit) one read from an iterator (one region, or one
      buffer of a sequential iterator) may take; a longer one fails the write with a
      ``ChunkWriteError`` and is abandoned, so the write returns at once.
    - ``tune_malloc``: on Linux with glibc, keep freed chunk-sized buffers in the process for
      reuse (glibc's mmap and trim thresholds and top pad, set once per process and in the ``processes``
      engine's workers; see :mod:`hdmf_zarr_parallel.write.allocator`), so that workers do not
      return every chunk's memory to the kernel while holding the GIL. ``False``: leave the
      allocator alone.

    ``mp_context`` and ``max_threads_per_process`` configure the ``processes`` engine's pool and
    come from hdmf-zarr's own ``write()`` arguments (``multiprocessing_context``,
    ``max_threads_per_process``, see :meth:`with_stock_arguments`), not from the IO's keywords.

    Integer settings accept any integral number (``numpy.int64`` too, never ``bool``) and are
    stored as ``int``.
    """

    engine: str = "auto"
    max_workers: int | None = None
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    progress: bool | dict[str, Any] = False
    mp_context: str | None = field(default=None, metadata={FROM_WRITE_ARGUMENTS: True})
    max_threads_per_process: int | None = field(default=None, metadata={FROM_WRITE_ARGUMENTS: True})
    gpu_batch_bytes: int = DEFAULT_GPU_BATCH_BYTES
    gpu_streams: int = 4
    gpu_cpu_helpers: int | None = None
    client: Any = field(default=None, compare=False, repr=False)
    dask_gpu: str = "auto"
    concurrent_reads: bool | None = None
    read_timeout: float | None = None
    tune_malloc: bool = True

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """The fields the IO classes take as keyword arguments, in order."""
        return tuple(f.name for f in fields(cls) if not f.metadata.get(FROM_WRITE_ARGUMENTS))

    def __post_init__(self) -> None:
        if not isinstance(self.engine, str):
            raise TypeError(f"engine must be a string, one of {ENGINES}; got {type(self.engine).__name__}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        for name, minimum, allow_none in (
            ("max_workers", 1, True),
            ("max_inflight_bytes", 1, False),
            ("max_threads_per_process", 1, True),
            ("gpu_batch_bytes", 1, False),
            ("gpu_streams", 1, False),
            ("gpu_cpu_helpers", 0, True),
        ):
            value = _check_positive_int(name, getattr(self, name), allow_none=allow_none, minimum=minimum)
            object.__setattr__(self, name, value)  # a numpy integer is kept as a plain int
        object.__setattr__(self, "read_timeout", _check_timeout("read_timeout", self.read_timeout))
        if not isinstance(self.tune_malloc, bool):
            raise TypeError(f"tune_malloc must be True or False, got {self.tune_malloc!r}")
        if self.concurrent_reads is not None and not isinstance(self.concurrent_reads, bool):
            raise TypeError(f"concurrent_reads must be True, False or None, got {self.concurrent_reads!r}")
        if not isinstance(self.progress, (bool, dict)):
            raise TypeError(f"progress must be a bool or a dict of tqdm options, got {type(self.progress).__name__}")
        if self.client is not None and self.engine != "dask":
            raise ValueError(f"client= is only used by engine='dask', not engine={self.engine!r}")
        if self.dask_gpu not in ("auto", "never", "always"):
            raise ValueError(f"dask_gpu must be 'auto', 'never' or 'always'; got {self.dask_gpu!r}")
        if self.mp_context not in (None, "fork", "spawn", "forkserver"):
            raise ValueError(
                f"multiprocessing_context must be None, 'fork', 'spawn' or 'forkserver'; got {self.mp_context!r}"
            )

    @property
    def workers(self) -> int:
        return self.max_workers or default_workers()

    def with_stock_arguments(
        self, number_of_jobs: int, max_threads_per_process: int | None, multiprocessing_context: str | None
    ) -> WriteOptions:
        """Map hdmf-zarr's own write arguments onto ours.

        ``number_of_jobs > 1`` asks for that many workers (and, with ``engine="auto"``,
        for worker processes, as stock hdmf-zarr uses); the other two configure the
        processes engine exactly as they configure stock hdmf-zarr's process pool.
        """
        number_of_jobs = _check_positive_int("number_of_jobs", number_of_jobs)
        changes: dict[str, Any] = {
            "max_threads_per_process": max_threads_per_process or self.max_threads_per_process,
            "mp_context": multiprocessing_context or self.mp_context,
        }
        if number_of_jobs > 1:
            changes["max_workers"] = number_of_jobs
            if self.engine == "auto":
                changes["engine"] = "processes"
        return replace(self, **changes)


def _check_positive_int(name: str, value: object, allow_none: bool = False, minimum: int = 1) -> int | None:
    """``value`` as an ``int``: any integral number (``numpy.int64`` too) except a bool."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_timeout(name: str, value: object) -> float | None:
    """``value`` as a positive, finite number of seconds, or ``None``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds (or None), got {value}")
    return value
