"""Lanes: one CUDA stream's worth of GPU work (upload, carve chunks, encode one batch).

The GPU engine runs several lanes at once, each on its own thread and stream, so the
copies of one batch overlap the compression of another. ``NvcompLane`` is the real
device; ``HostLane`` performs the same steps with numpy and each algorithm's CPU
reference codec (whose output it turns back into nvCOMP's RAW form and frames as the
device path does), so the engine's scheduling, chunk carving, framing, shard assembly and
error handling are tested on machines without a GPU (CI), against stock zarr reads. Its
output comes as nvCOMP's does, views into host buffers; where the process runs the native
loop, its zstd is one GIL-free call per batch, as nvCOMP's is, so the GIL cost of the GPU
engine's host path can be measured without a GPU (``benchmarks/bench_gil_trace.py``).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cpu.native import NativeRows
from . import algorithms
from .inputs import BatchInput, once
from .plan import GpuCodecPlan


class Lane(ABC):
    """One stream's device: its array module, where to upload, how to encode one batch."""

    #: the array module of the device (cupy) or of the host (numpy)
    xp: Any = np
    #: exceptions that mean "the batch did not fit in device memory"
    out_of_memory: tuple[type[BaseException], ...] = (MemoryError,)

    def context(self):
        """Make this lane's stream current for the array operations inside the ``with`` block."""
        return contextlib.nullcontext()

    @abstractmethod
    def upload(self, host: np.ndarray) -> Any:
        """Copy a host array to the device (through pinned staging where there is a device)."""

    @abstractmethod
    def encode(self, plan: GpuCodecPlan, rows: Any, indices: Sequence[int]) -> list[memoryview | bytes]:
        """One batched encode of the chosen rows (chunks) of a ``(chunks, chunk elements)``
        matrix; host bytes per row, framed as the CPU codec reads them."""

    def free_memory(self) -> None:  # noqa: B027 - optional hook
        """Give cached device memory back (before retrying a smaller batch)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release every device resource of the lane."""


class NvcompLane(Lane):
    """A CUDA stream, a pinned staging buffer and one nvCOMP encoder per codec plan."""

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.out_of_memory = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._pinned: np.ndarray | None = None
        self._encoders: dict[GpuCodecPlan, Any] = {}

    def context(self):
        return self.stream

    def _staging(self, nbytes: int) -> np.ndarray:
        if self._pinned is None or self._pinned.nbytes < nbytes:
            import cupyx

            self._pinned = None
            self._pinned = cupyx.empty_pinned(max(nbytes, 1 << 20), dtype=np.uint8)
        return self._pinned

    def upload(self, host: np.ndarray) -> Any:
        self.stream.synchronize()  # the previous upload may still be reading the staging buffer
        staging = self._staging(host.nbytes)[: host.nbytes].view(host.dtype).reshape(host.shape)
        np.copyto(staging, host)
        with self.stream:
            device = self.xp.empty(host.shape, host.dtype)
            device.set(staging, stream=self.stream)
        return device

    def encode(self, plan: GpuCodecPlan, rows: Any, indices: Sequence[int]) -> list[memoryview | bytes]:
        from .encoder import NvcompBatchEncoder

        encoder = self._encoders.get(plan)
        if encoder is None:
            encoder = self._encoders[plan] = NvcompBatchEncoder(plan, stream=self.stream)
        with self.stream:
            return encoder.encode_rows(rows, indices, copy=True)

    def free_memory(self) -> None:
        self.stream.synchronize()
        self.xp.get_default_memory_pool().free_all_blocks()

    def close(self) -> None:
        for encoder in self._encoders.values():
            encoder.close()
        self._encoders.clear()
        self._pinned = None
        try:
            self.stream.synchronize()
        finally:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()


class HostLane(Lane):
    """The lane's steps on the host with numpy and the algorithms' CPU reference codecs: same bytes format, no device."""

    def __init__(self) -> None:
        self._native: dict[int, NativeRows | None] = {}  # zstd level -> its batched compressor

    def upload(self, host: np.ndarray) -> np.ndarray:
        return host

    def encode(self, plan: GpuCodecPlan, rows: np.ndarray, indices: Sequence[int]) -> list[memoryview | bytes]:
        """The device encoder's steps (``encoder.NvcompBatchEncoder.encode_rows``) on the host: the chosen
        rows are read where they lie, gathered only for an algorithm that transforms or prepares them."""
        if not len(indices):
            return []
        algorithm = algorithms.get(plan.algorithm)
        matrix = _rows_bytes(rows, plan)
        picked = np.asarray(indices, dtype=np.intp)
        chosen = once(lambda: matrix[picked])
        transformed = algorithm.transform(np, plan, chosen)  # e.g. Blosc's shuffled blocks
        offsets, sizes = algorithm.streams(plan)
        if transformed is None:
            source = BatchInput(np, matrix, picked, plan.chunk_nbytes, offsets, sizes)
        else:
            source = BatchInput(np, transformed, range(len(picked)), plan.chunk_nbytes, offsets, sizes, chosen())
        raw = self._compress(algorithm, plan, source)
        return algorithm.frame(raw, plan, algorithm.prepare(np, chosen), source)

    def _compress(self, algorithm: algorithms.Algorithm, plan: GpuCodecPlan, source: BatchInput) -> list[memoryview]:
        """The stand-in for nvCOMP's one batched call: what its RAW output holds for each stream of
        ``source`` (each chunk, or each of its Blosc blocks), as views into host buffers, as the batch
        comes back from the device. Whole-chunk zstd goes in one GIL-free call where this process runs
        the native loop (as nvCOMP's call holds no GIL); else the algorithm's numcodecs reference."""
        if algorithm.name == "zstd" and len(source.sizes) == 1:
            native = self._native_zstd(plan.level or 0)
            if native is not None:
                return native.compress(source.matrix, source.rows)
        reference = algorithm.reference(plan.level)
        streams = list(zip(source.offsets.tolist(), source.sizes.tolist(), strict=True))
        return _downloaded(
            [
                algorithm.raw(reference.encode(source.matrix[i, o : o + n]))
                for i in source.rows.tolist()
                for o, n in streams
            ]
        )

    def _native_zstd(self, level: int) -> NativeRows | None:
        """This lane's batched zstd compressor for ``level`` (a lane is one thread's), made once."""
        if level not in self._native:
            self._native[level] = NativeRows.make(level)
        return self._native[level]


#: the host buffers the host lane's outputs are packed into: small enough for malloc to reuse them
#: (below its mmap threshold), as the device lane reuses its pinned buffers from cupy's pool
DOWNLOAD_BLOCK = 4 << 20


def _downloaded(raw: list) -> list[memoryview]:
    """The RAW outputs as the device lane hands them on: views into a few host buffers (the device's
    download of a batch), not one object per chunk."""
    sizes = [memoryview(r).nbytes for r in raw]
    ends = list(itertools.accumulate(sizes))
    views: list[memoryview] = []
    first = 0
    while first < len(raw):
        base = ends[first] - sizes[first]
        last = max(bisect.bisect_right(ends, base + DOWNLOAD_BLOCK, lo=first), first + 1)
        host = memoryview(b"".join(raw[first:last]))
        views += [host[end - n - base : end - base] for n, end in zip(sizes[first:last], ends[first:last], strict=True)]
        first = last
    return views


def _rows_bytes(rows: np.ndarray, plan: GpuCodecPlan) -> np.ndarray:
    """The chunks' bytes as stored, one ``uint8`` row each, C-contiguous: typed rows in the storage byte
    order (a copy only where they are not that already); byte rows as they are."""
    if rows.dtype != np.uint8:
        rows = np.ascontiguousarray(rows, dtype=plan.dtype)
    return np.ascontiguousarray(rows).reshape(len(rows), -1).view(np.uint8)
