"""Encode write units with the array's own codecs, synchronously and with little time under the GIL.

Using zarr's codec objects (not re-implementations) is what keeps invariant 1: every unit
is encoded exactly as zarr itself would encode it, including sharding and the all-fill-value
skip. Chains of a ``bytes`` serializer followed by compressors (the usual ones) are encoded
by calling the numcodecs objects behind zarr's codecs directly (:class:`DirectChunkEncoder`;
shards by :mod:`.shard`, the same way): a numpy view of the unit in the stored byte order,
then each bytes-to-bytes codec's numcodecs ``encode``, which releases the GIL while it
compresses. Other chains go through zarr's ``ChunkTransform``. Either way the bytes are
zarr's (``tests/test_cpu_shard.py``, ``tests/test_roundtrip.py`` compare them).

Private zarr touch points: ``Array._async_array`` (``codec_pipeline``, ``config``),
``zarr.core.chunk_utils.ChunkTransform`` / ``chunk_is_empty``,
``zarr.core.codec_pipeline.AsyncChunkTransform``; :func:`.._zarr.numcodecs_encoder` for the
numcodecs objects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.chunk_utils import ChunkTransform, chunk_is_empty
from zarr.core.codec_pipeline import AsyncChunkTransform
from zarr.core.sync import sync

from .._zarr import numcodecs_encoder
from ..chain import parse_codecs, storage_dtype
from .shard import CpuShardEncoder, Encode, FillCheck
from .zstd_frames import ZstdFrames, frames_for

#: what ``encode`` returns: bytes-like (``bytes``, a contiguous numpy array), a zarr Buffer, or None
Encoded = Any


class DirectChunkEncoder:
    """``bytes`` serializer + numcodecs-backed compressors of an unsharded array, called directly."""

    def __init__(self, stored: np.dtype, stages: list[Encode], frames: ZstdFrames | None = None) -> None:
        self._stored = stored
        self._stages = stages
        self._frames = frames

    @classmethod
    def for_array(cls, array: zarr.Array) -> DirectChunkEncoder | None:
        try:
            chain = parse_codecs(array._async_array.codec_pipeline)
        except ValueError:
            return None
        dtype = np.dtype(array.dtype)
        if chain.sharding is not None or not chain.plain_bytes or chain.array_array:
            return None
        if dtype.kind not in "biuf" or dtype.fields is not None:
            return None
        stages = [numcodecs_encoder(c) for c in chain.bytes_bytes]
        if any(stage is None for stage in stages):
            return None
        return cls(storage_dtype(dtype, chain.endian), stages, frames_for(chain.bytes_bytes))

    def stores_own_bytes(self, dtype: np.dtype) -> bool:
        """Whether the chain stores an array of ``dtype`` as its bytes in memory (no byte swap)."""
        return self._stored == np.dtype(dtype)

    @property
    def frames(self) -> ZstdFrames | None:
        """The zstd compressor when the chain is zstd alone on the array's own bytes, else ``None``."""
        return self._frames

    def encode(self, unit: np.ndarray) -> Encoded:
        if self._frames is not None and unit.dtype == self._stored:
            return self._frames.compress(unit)
        data: Any = unit.astype(self._stored, copy=False).reshape(-1).view(np.uint8)
        for stage in self._stages:
            data = stage(data)
        return data


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
        self._direct = None if array.shards else DirectChunkEncoder.for_array(array)
        fast = self._shards is not None or self._direct is not None
        # the all-fill check: zarr's rule without its buffer wrappers where the dtype allows
        self._empty = FillCheck.for_spec(self._spec, self.dtype) if fast else None
        self._stored_is_own = self._direct is not None and self._direct.stores_own_bytes(self.dtype)
        self._local = threading.local()
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

    def encode(self, data: np.ndarray) -> Encoded:
        """Encoded bytes of one unit, or ``None`` when zarr would not store it (all fill value)."""
        unit = self.pad(data)
        if self._empty is not None:
            if self._shards is not None:
                return None if self._empty(unit) else self._shards.encode(unit, data.shape)
            if self._direct is not None:
                return None if self._empty(unit) else self._direct.encode(unit)
        chunk = self._prototype.nd_buffer.from_numpy_array(unit)
        if chunk_is_empty(chunk, self._spec):
            return None
        if self._sync is not None:
            return self._sync.encode_chunk(chunk, self._spec)
        return sync(self._async.encode_chunk(chunk, self._spec))

    def encode_many(self, units: Sequence[np.ndarray]) -> Iterator[Encoded]:
        """The encoded bytes of several units, one by one (what :meth:`encode` gives each).

        A zstd chain of an unsharded array is encoded in one loop: each unit that is not already
        a contiguous whole chunk is copied into one per-thread staging chunk (no per-unit padded
        copy is allocated) and compressed from there with :mod:`.zstd_frames`.
        """
        frames = self._direct.frames if self._direct is not None and self._stored_is_own else None
        if frames is None or self._empty is None:
            yield from (self.encode(data) for data in units)
            return
        empty, shape, dtype = self._empty, self.unit_shape, self.dtype
        for data in units:
            chunk = data if data.shape == shape and data.dtype == dtype and data.flags.c_contiguous else None
            if chunk is None:
                chunk = self._staged(data)
            yield None if empty(chunk) else frames.compress(chunk)

    def _staged(self, data: np.ndarray) -> np.ndarray:
        """``data`` copied into this thread's staging chunk, padded with the fill value at the edges."""
        stage = getattr(self._local, "stage", None)
        if stage is None:
            stage = self._local.stage = np.empty(self.unit_shape, self.dtype)
        if data.shape == self.unit_shape:
            np.copyto(stage, data, casting="unsafe")
        else:
            stage.fill(self.fill_value)
            stage[tuple(slice(0, n) for n in data.shape)] = data
        return stage


def encoded_bytes(encoded: Encoded) -> bytes | None:
    """An encoder's output as ``bytes`` (tests, benchmarks)."""
    if encoded is None:
        return None
    if isinstance(encoded, Buffer):
        return encoded.to_bytes()
    return bytes(memoryview(encoded).cast("B"))
