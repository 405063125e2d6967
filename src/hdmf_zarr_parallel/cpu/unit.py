"""Encode one write unit with the array's own zarr codec chain, synchronously.

Using zarr's codec objects (not re-implementations) is what keeps invariant 1:
every unit is encoded exactly as zarr itself would encode it, including sharding
and the all-fill-value skip. Shards whose inner chain allows it are encoded by
:mod:`.shard`, which calls the same codec objects with less time under the GIL
and lays the shard out as zarr does: the same bytes.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.chunk_utils import ChunkTransform, chunk_is_empty
from zarr.core.codec_pipeline import AsyncChunkTransform
from zarr.core.sync import sync

from .shard import CpuShardEncoder


class ZarrUnitEncoder:
    """Encodes whole write units (chunks, or shards when sharded) of one array."""

    def __init__(self, array: zarr.Array) -> None:
        async_array = array._async_array
        metadata = array.metadata
        self.unit_shape: tuple[int, ...] = tuple(array.shards or array.chunks)
        self.dtype = np.dtype(array.dtype)
        self.fill_value = metadata.fill_value
        self._prototype = default_buffer_prototype()
        self._spec = ArraySpec(
            shape=self.unit_shape,
            dtype=metadata.data_type,
            fill_value=metadata.fill_value,
            config=async_array.config,
            prototype=self._prototype,
        )
        self._shards = CpuShardEncoder.for_array(array, self._spec) if array.shards else None
        codecs = tuple(async_array.codec_pipeline)
        try:
            self._sync = ChunkTransform(codecs=codecs)
            self._async = None
        except TypeError:  # a codec without a synchronous path: run its coroutine instead
            self._sync = None
            self._async = AsyncChunkTransform(codecs=codecs)

    def pad(self, data: np.ndarray) -> np.ndarray:
        """Edge units are padded to the full unit shape with the fill value, as zarr does."""
        if data.shape == self.unit_shape:
            return np.ascontiguousarray(data, dtype=self.dtype)  # one copy at most, no fill pass
        full = np.full(self.unit_shape, self.fill_value, dtype=self.dtype)
        full[tuple(slice(0, n) for n in data.shape)] = data
        return full

    def encode(self, data: np.ndarray) -> Buffer | None:
        """Encoded bytes of one unit, or ``None`` when zarr would not store it (all fill value)."""
        unit = self.pad(data)
        chunk = self._prototype.nd_buffer.from_numpy_array(unit)
        if chunk_is_empty(chunk, self._spec):
            return None
        if self._shards is not None:
            return self._shards.encode(unit)
        if self._sync is not None:
            return self._sync.encode_chunk(chunk, self._spec)
        return sync(self._async.encode_chunk(chunk, self._spec))
