"""Lanes: one CUDA stream's worth of GPU work (upload, carve chunks, encode one batch).

The GPU engine runs several lanes at once, each on its own thread and stream, so the
copies of one batch overlap the compression of another. ``NvcompLane`` is the real
device; ``HostLane`` performs the same steps with numpy and numcodecs so the engine's
scheduling, chunk carving, shard assembly and error handling are tested on machines
without a GPU (CI), against stock zarr reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codecs.gpu_plan import GpuCodecPlan
from ..plan import Region


class Lane(ABC):
    """The device operations the GPU engine needs, for one stream."""

    #: exceptions that mean "the batch did not fit in device memory"
    out_of_memory: tuple[type[BaseException], ...] = (MemoryError,)

    @abstractmethod
    def upload(self, host: np.ndarray) -> Any:
        """Copy a host array to the device (through pinned staging where there is a device)."""

    @abstractmethod
    def carve(self, device: Any, local: Region, shape: tuple[int, ...], fill_value: Any) -> Any:
        """The part ``local`` of ``device`` as a C-contiguous chunk of ``shape``, padded with the fill value."""

    @abstractmethod
    def fill(self, shape: tuple[int, ...], dtype: np.dtype, fill_value: Any) -> Any:
        """A chunk holding only the fill value."""

    @abstractmethod
    def is_fill(self, chunks: Sequence[Any], fill_value: Any) -> list[bool]:
        """Which chunks hold only the fill value (NaN equals NaN)."""

    @abstractmethod
    def encode(self, plan: GpuCodecPlan, chunks: Sequence[Any]) -> list[memoryview | bytes]:
        """One batched encode; host bytes per chunk, framed as the CPU codec reads them."""

    def free_memory(self) -> None:  # noqa: B027 - optional hook
        """Give cached device memory back (before retrying a smaller batch)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release every device resource of the lane."""


class NvcompLane(Lane):
    """A CUDA stream, a pinned staging buffer and one nvCOMP encoder per codec plan."""

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.out_of_memory = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._pinned: np.ndarray | None = None
        self._encoders: dict[GpuCodecPlan, Any] = {}

    def _staging(self, nbytes: int) -> np.ndarray:
        if self._pinned is None or self._pinned.nbytes < nbytes:
            import cupyx

            self._pinned = None
            self._pinned = cupyx.empty_pinned(max(nbytes, 1 << 20), dtype=np.uint8)
        return self._pinned

    def upload(self, host: np.ndarray) -> Any:
        host = np.ascontiguousarray(host)
        staging = self._staging(host.nbytes)[: host.nbytes].view(host.dtype).reshape(host.shape)
        np.copyto(staging, host)
        with self.stream:
            device = self._cupy.empty(host.shape, host.dtype)
            device.set(staging, stream=self.stream)
        return device

    def carve(self, device: Any, local: Region, shape: tuple[int, ...], fill_value: Any) -> Any:
        from ..codecs.gpu import pad_to_chunk

        with self.stream:
            return pad_to_chunk(device[local], shape, fill_value, device.dtype)

    def fill(self, shape: tuple[int, ...], dtype: np.dtype, fill_value: Any) -> Any:
        with self.stream:
            return self._cupy.full(shape, fill_value if fill_value is not None else 0, dtype)

    def is_fill(self, chunks: Sequence[Any], fill_value: Any) -> list[bool]:
        from ..codecs.gpu import is_fill_chunks

        with self.stream:
            return is_fill_chunks(chunks, fill_value)

    def encode(self, plan: GpuCodecPlan, chunks: Sequence[Any]) -> list[memoryview | bytes]:
        from ..codecs.gpu import NvcompBatchEncoder

        encoder = self._encoders.get(plan)
        if encoder is None:
            encoder = self._encoders[plan] = NvcompBatchEncoder(plan, stream=self.stream)
        with self.stream:
            return encoder.encode(chunks, copy=True)

    def free_memory(self) -> None:
        self.stream.synchronize()
        self._cupy.get_default_memory_pool().free_all_blocks()

    def close(self) -> None:
        for encoder in self._encoders.values():
            encoder.close()
        self._encoders.clear()
        self._pinned = None
        try:
            self.stream.synchronize()
        finally:
            self._cupy.get_default_memory_pool().free_all_blocks()
            self._cupy.get_default_pinned_memory_pool().free_all_blocks()


class HostLane(Lane):
    """The lane's steps on the host with numcodecs: same bytes format, no device."""

    def upload(self, host: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(host)

    def carve(self, device: np.ndarray, local: Region, shape: tuple[int, ...], fill_value: Any) -> np.ndarray:
        part = device[local]
        if part.shape == shape:
            return np.ascontiguousarray(part)
        out = self.fill(shape, device.dtype, fill_value)
        out[tuple(slice(0, n) for n in part.shape)] = part
        return out

    def fill(self, shape: tuple[int, ...], dtype: np.dtype, fill_value: Any) -> np.ndarray:
        return np.full(shape, fill_value if fill_value is not None else 0, dtype)

    def is_fill(self, chunks: Sequence[np.ndarray], fill_value: Any) -> list[bool]:
        def one(chunk: np.ndarray) -> bool:
            if chunk.dtype.kind in "fc" and np.isnan(fill_value):
                return bool(np.isnan(chunk).all())
            return bool((chunk == fill_value).all())

        return [one(c) for c in chunks]

    def encode(self, plan: GpuCodecPlan, chunks: Sequence[np.ndarray]) -> list[bytes]:
        import numcodecs

        codec = {
            "zstd": lambda: numcodecs.Zstd(level=plan.level or 0),
            "gzip": lambda: numcodecs.GZip(level=plan.level if plan.level is not None else 5),
            "lz4": lambda: numcodecs.LZ4(acceleration=plan.level or 1),
        }[plan.algorithm]()
        return [codec.encode(np.ascontiguousarray(c, dtype=plan.dtype)) for c in chunks]
