"""Lanes: one CUDA stream's worth of GPU work (upload, carve chunks, encode one batch).

The GPU engine runs several lanes at once, each on its own thread and stream, so the
copies of one batch overlap the compression of another. ``NvcompLane`` is the real
device; ``HostLane`` performs the same steps with numpy and numcodecs so the engine's
scheduling, chunk carving, shard assembly and error handling are tested on machines
without a GPU (CI), against stock zarr reads.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codecs.gpu_plan import GpuCodecPlan
from ..codecs.zlib_frame import adler32_rows, frame


def chunk_matrix(xp, tile, units: tuple[int, ...], inner: tuple[int, ...], chunk: tuple[int, ...], fill_value):
    """All chunks of a unit-aligned tile as one C-contiguous ``(units, chunks per unit, chunk size)`` array.

    The tile is padded with the fill value to whole units (zarr pads edge chunks the same
    way), then one reshape/transpose copy orders the chunks unit by unit in C order of the
    unit coordinates and, inside a shard, in C order of the inner-chunk coordinates: the
    order ``UnitGrid.units_overlapping`` and the shard index use. An unsharded array is
    the case of one chunk per unit (``inner`` all ones).
    """
    full = tuple(n * k * c for n, k, c in zip(units, inner, chunk, strict=True))
    if tuple(tile.shape) != full:
        padded = xp.full(full, fill_value if fill_value is not None else 0, dtype=tile.dtype)
        padded[tuple(slice(0, s) for s in tile.shape)] = tile
        tile = padded
    ndim = len(full)
    split = tile.reshape(tuple(x for nkc in zip(units, inner, chunk, strict=True) for x in nkc))
    order = [3 * i for i in range(ndim)] + [3 * i + 1 for i in range(ndim)] + [3 * i + 2 for i in range(ndim)]
    ordered = xp.ascontiguousarray(split.transpose(order))
    return ordered.reshape(math.prod(units), math.prod(inner), math.prod(chunk))


def fill_rows(xp, rows, fill_value) -> np.ndarray:
    """Which rows (chunks) hold only the fill value, as zarr decides it: NaN equals a NaN fill,
    otherwise the bit patterns must match (so -0.0 is not a 0.0 fill). One reduction, one copy back."""
    dtype = np.dtype(rows.dtype)
    if fill_value is None:
        fill_value = 0
    if dtype.kind in "fc" and np.isnan(fill_value):
        flags = xp.isnan(rows).all(axis=1)
    else:
        bits = np.dtype(f"u{dtype.itemsize}") if dtype.itemsize in (1, 2, 4, 8) else None
        if bits is None:  # complex and other wide types: compare values
            flags = (rows == dtype.type(fill_value)).all(axis=1)
        else:
            target = np.array(fill_value, dtype=dtype).view(bits)
            flags = (rows.view(bits) == bits.type(target)).all(axis=1)
    return np.asarray(flags.get() if hasattr(flags, "get") else flags, dtype=bool)


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
        from ..codecs.gpu import NvcompBatchEncoder

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
    """The lane's steps on the host with numpy and numcodecs: same bytes format, no device."""

    def upload(self, host: np.ndarray) -> np.ndarray:
        return host

    def encode(self, plan: GpuCodecPlan, rows: np.ndarray, indices: Sequence[int]) -> list[bytes]:
        import numcodecs

        chunks = [_row_bytes(rows[i], plan) for i in indices]
        if plan.algorithm == "zlib":  # nvCOMP's raw deflate, framed as on the device
            checksums = adler32_rows(np, np.stack(chunks)) if chunks else []
            return [frame(_raw_deflate(c, plan.level), a) for c, a in zip(chunks, checksums, strict=True)]
        codec = {
            "zstd": lambda: numcodecs.Zstd(level=plan.level or 0),
            "gzip": lambda: numcodecs.GZip(level=plan.level if plan.level is not None else 5),
            "lz4": lambda: numcodecs.LZ4(acceleration=plan.level or 1),
        }[plan.algorithm]()
        return [codec.encode(c) for c in chunks]


def _row_bytes(row: np.ndarray, plan: GpuCodecPlan) -> np.ndarray:
    """One chunk's bytes as stored: typed rows in the storage byte order; byte rows as they are."""
    if row.dtype != np.uint8:
        row = np.ascontiguousarray(row, dtype=plan.dtype)
    return np.ascontiguousarray(row).view(np.uint8)


def _raw_deflate(data: np.ndarray, level: int | None) -> bytes:
    import zlib

    compressor = zlib.compressobj(level if level is not None else 1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()
