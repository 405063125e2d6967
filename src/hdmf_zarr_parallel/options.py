"""The user-facing write settings, validated once before any data moves.

:class:`WriteOptions` is the one place they are named and documented: the IO classes take
each of its fields as a keyword argument (except those hdmf-zarr's own ``write()`` arguments
set, see :data:`FROM_WRITE_ARGUMENTS`), and the engine names come from the engine registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .engines.registry import ENGINE_NAMES

ENGINES = ENGINE_NAMES  # the names engine= accepts, as the registry lists them
DEFAULT_GPU_BATCH_BYTES = 128 << 20  # one nvCOMP call on ~128 MiB keeps an H100 busy (see benchmarks)
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
      ``None``: one per CPU core.
    - ``max_inflight_bytes``: the bound on data read but not yet stored; a chunk or shard that
      cannot fit is refused before any data moves.
    - ``progress``: one tqdm bar over the bytes of each write; a dict passes tqdm options.
    - ``gpu_batch_bytes``: ``engine="gpu"``: uncompressed bytes per nvCOMP batch (one tile).
    - ``gpu_streams``: ``engine="gpu"``: lanes (threads, each with its own CUDA stream).
    - ``gpu_cpu_helpers``: ``engine="gpu"``: threads that encode with the CPU codecs beside the lanes.
    - ``client``: ``engine="dask"``: the ``distributed.Client`` (``None``: the current client).
    - ``dask_gpu``: ``engine="dask"``: whether workers encode on their GPU: ``"auto"`` (where one
      is usable), ``"never"`` or ``"always"``.
    - ``concurrent_reads``: whether several workers may read one iterator at once (``None``: each
      iterator's own ``concurrent_reads`` attribute decides; without one, one read at a time).

    ``mp_context`` and ``max_threads_per_process`` configure the ``processes`` engine's pool and
    come from hdmf-zarr's own ``write()`` arguments (``multiprocessing_context``,
    ``max_threads_per_process``, see :meth:`with_stock_arguments`), not from the IO's keywords.
    """

    engine: str = "auto"
    max_workers: int | None = None
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    progress: bool | dict[str, Any] = False
    mp_context: str | None = field(default=None, metadata={FROM_WRITE_ARGUMENTS: True})
    max_threads_per_process: int | None = field(default=None, metadata={FROM_WRITE_ARGUMENTS: True})
    gpu_batch_bytes: int = DEFAULT_GPU_BATCH_BYTES
    gpu_streams: int = 4
    gpu_cpu_helpers: int = 0
    client: Any = field(default=None, compare=False, repr=False)
    dask_gpu: str = "auto"
    concurrent_reads: bool | None = None

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """The fields the IO classes take as keyword arguments, in order."""
        return tuple(f.name for f in fields(cls) if not f.metadata.get(FROM_WRITE_ARGUMENTS))

    def __post_init__(self) -> None:
        if not isinstance(self.engine, str):
            raise TypeError(f"engine must be a string, one of {ENGINES}; got {type(self.engine).__name__}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        _check_positive_int("max_workers", self.max_workers, allow_none=True)
        _check_positive_int("max_inflight_bytes", self.max_inflight_bytes)
        _check_positive_int("max_threads_per_process", self.max_threads_per_process, allow_none=True)
        _check_positive_int("gpu_batch_bytes", self.gpu_batch_bytes)
        _check_positive_int("gpu_streams", self.gpu_streams)
        _check_positive_int("gpu_cpu_helpers", self.gpu_cpu_helpers, minimum=0)
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
        _check_positive_int("number_of_jobs", number_of_jobs)
        changes: dict[str, Any] = {
            "max_threads_per_process": max_threads_per_process or self.max_threads_per_process,
            "mp_context": multiprocessing_context or self.mp_context,
        }
        if number_of_jobs > 1:
            changes["max_workers"] = number_of_jobs
            if self.engine == "auto":
                changes["engine"] = "processes"
        return replace(self, **changes)


def _check_positive_int(name: str, value: object, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
