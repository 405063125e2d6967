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
from zarr.abc.buffer import Buffer
from zarr.buffer import default_buffer_prototype

from .._zarr import chunk_encoder, chunk_is_empty, evolved_codecs, unit_spec
from .shard import CpuShardEncoder


class ZarrUnitEncoder:
    """Encodes whole write units (chunks, or shards when sharded) of one array."""

    def __init__(self, array: zarr.Array) -> None:
        self.unit_shape: tuple[int, ...] = tuple(array.shards or array.chunks)
        self.dtype = np.dtype(array.dtype)
        self.fill_value = array.metadata.fill_value
        self._prototype = default_buffer_prototype()
        self._spec = unit_spec(array, self.unit_shape)
        self._shards = CpuShardEncoder.for_array(array, self._spec) if array.shards else None
        self._encode = chunk_encoder(evolved_codecs(array))

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
        return self._encode(chunk, self._spec)
