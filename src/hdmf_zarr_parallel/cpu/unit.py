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

import math
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
from ..rows import chunk_matrix
from .native import UnitLayout
from .shard import CpuShardEncoder, Encode, FillCheck
from .zstd_frames import ZstdFrames, frames_for

#: what ``encode`` returns: bytes-like (``bytes``, a contiguous numpy array), a zarr Buffer, or None
Encoded = Any


class DirectChunkEncoder:
    """``bytes`` serializer + numcodecs-backed compressors of an unsharded array, called directly."""

    def __init__(self, stored: np.dtype, stages: list[Encode], frames: ZstdFrames | None = None) -> None:
        self._stored = stored
        self._stages = stages
        self.frames = frames  # zstd alone: numcodecs' libzstd called directly (cpu/native.py uses it)

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

    def encode(self, unit: np.ndarray) -> Encoded:
        data: Any = unit.astype(self._stored, copy=False).reshape(-1).view(np.uint8)
        for stage in self._stages:
            data = stage(data)
        return data

    def stored_bytes(self, rows: np.ndarray) -> np.ndarray:
        """A matrix of chunks (one per row) as the bytes the chain stores, one ``uint8`` row each."""
        return rows.astype(self._stored, copy=False).view(np.uint8)

    def encode_rows(self, rows: np.ndarray, skip: np.ndarray | None) -> list[Encoded]:
        """Each row of a C-contiguous matrix of whole chunks encoded, ``None`` where ``skip`` says.

        One tight loop with nothing between one codec call and the next but the loop itself: the
        Python a worker runs per chunk is what it holds the GIL for. A failure is
        :class:`RowEncodeError` naming the row.
        """
        matrix = self.stored_bytes(rows)
        stages = self._stages
        out: list[Encoded] = [None] * len(matrix)
        todo = range(len(matrix)) if skip is None else np.flatnonzero(~skip).tolist()
        i = 0
        try:
            for i in todo:
                data: Any = matrix[i]
                for stage in stages:
                    data = stage(data)
                out[i] = data
        except Exception as exc:
            raise RowEncodeError(i) from exc
        return out


class RowEncodeError(Exception):
    """Encoding row ``index`` of a matrix of units failed (the cause is the codec's exception)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


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

    def block_rows(self, block: np.ndarray, units: tuple[int, ...]) -> np.ndarray:
        """A block of ``units`` whole units (per axis) laid out as :meth:`encode_rows` takes it, in
        one numpy copy: one row per unit, in C order of their coordinates (a shard encoder's
        layout: one matrix of inner chunks per shard)."""
        if self._shards is not None:
            return self._shards.block_rows(block, units)
        ones = (1,) * block.ndim
        return chunk_matrix(np, block, units, ones, self.unit_shape, None).reshape(math.prod(units), -1)

    @property
    def native_layout(self) -> tuple[ZstdFrames, UnitLayout] | None:
        """For a chain of zstd alone encoded here directly: its compressor and the layout of a unit's
        file (``cpu/native.py``); else ``None``."""
        if self._empty is None:
            return None
        if self._shards is not None:
            return self._shards.native_layout
        frames = self._direct.frames if self._direct is not None else None
        return None if frames is None else (frames, UnitLayout.chunk())

    def stored_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """For a chain with :attr:`native_layout`: the units of :meth:`block_rows` as the bytes
        stored, one ``uint8`` row per chunk (per inner chunk of a shard), and which of those rows
        zarr would not store (all fill value; ``None``: none)."""
        if self._shards is not None:
            return self._shards.stored_rows(rows)
        return self._direct.stored_bytes(rows), self._empty.empty_rows(rows)

    def encode_rows(self, rows: np.ndarray) -> list[Encoded]:
        """The encoded bytes of the whole units of :meth:`block_rows`, ``None`` for those zarr
        would not store; what :meth:`encode` gives each (unsharded: one fill check for all of
        them). A failure is :class:`RowEncodeError` naming the unit."""
        if self._direct is not None and self._empty is not None:
            return self._direct.encode_rows(rows, self._empty.empty_rows(rows))
        shards = self._shards if self._empty is not None else None
        out: list[Encoded] = []
        for i, row in enumerate(rows):
            try:
                out.append(shards.encode_rows(row) if shards is not None else self.encode(row.reshape(self.unit_shape)))
            except Exception as exc:
                raise RowEncodeError(i) from exc
        return out

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


def encoded_bytes(encoded: Encoded) -> bytes | None:
    """An encoder's output as ``bytes`` (tests, benchmarks)."""
    if encoded is None:
        return None
    if isinstance(encoded, Buffer):
        return encoded.to_bytes()
    return bytes(memoryview(encoded).cast("B"))
