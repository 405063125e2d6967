"""Encode whole shards on the CPU with little time under the GIL.

zarr's ``ShardingCodec`` encodes a shard's inner chunks one by one through its generic
codec machinery (indexers, buffer wrappers, a sync transform per chunk); that Python work
holds the GIL, so threads encoding shards in parallel stop scaling early
(benchmarks/RESULTS.md has the measurements).

Here the inner chunks are cut with numpy and passed straight to the very numcodecs codec
objects zarr's inner codecs call (``ZstdCodec._zstd_codec``, ``GzipCodec._gzip_codec``,
``numcodecs.*`` wrappers' ``_codec``), which release the GIL while they compress; a chain of
zstd alone is compressed by numcodecs' own libzstd straight into one buffer per shard
(:mod:`.zstd_frames`), followed by the index. The shard is cut into its inner chunks with one
numpy copy (:func:`..rows.chunk_matrix`, as the GPU lanes carve tiles) and the
empty-chunk rule is zarr's ``chunk_is_empty`` without its buffer wrappers, for all inner
chunks at once (:meth:`FillCheck.empty_rows`). The shard is laid out as
:mod:`~hdmf_zarr_parallel.shard_layout` describes (the layout the GPU path uses too), with
the inner chunks in the order zarr's encoder writes them (the codec's
``subchunk_write_order``), so the bytes are identical to zarr's (``tests/test_cpu_shard.py``
and ``tests/test_zstd_frames.py`` compare them). The chain is read by :func:`~hdmf_zarr_parallel.chain.parse_codecs`; chains
this does not cover (array-to-array codecs, stored bytes other than the array's own, other
serializers, index codecs other than ``bytes`` + optional ``crc32c``) make
:meth:`CpuShardEncoder.for_array` return ``None``, and zarr encodes those shards itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import zarr
from zarr.core.array_spec import ArraySpec

from .._zarr import numcodecs_encoder
from ..chain import Sharding, parse_codecs, storage_dtype
from ..rows import chunk_matrix
from ..shard_layout import build_shard, shard_index, shard_index_nbytes
from .native import UnitLayout
from .zstd_frames import ZstdFrames, frames_for

Encode = Callable[[Any], Any]
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class FillCheck:
    """zarr's ``chunk_is_empty`` for C-contiguous numpy chunks of a numeric dtype, without wrappers.

    zarr (``NDBuffer.all_equal``) compares bit patterns for a 0.0 fill (so -0.0 is data), treats
    every NaN as equal to a NaN fill, and compares values otherwise; for the dtypes here, values
    are equal exactly when their bits are. The first element is checked first: a chunk of data
    almost never starts with the fill value, so the whole-chunk comparison (one numpy pass, which
    releases the GIL) runs only for chunks that may be empty. :meth:`empty_rows` checks the rows
    of a matrix of chunks (a shard's inner chunks) with one numpy call for all their first elements.
    """

    def __init__(self, bits: type | None, target: object, nan: bool, never: bool = False) -> None:
        self._bits, self._target, self._nan, self._never = bits, target, nan, never

    @classmethod
    def for_spec(cls, spec: ArraySpec, dtype: np.dtype) -> FillCheck | None:
        """The check for chunks of ``spec`` (never empty with ``write_empty_chunks``); ``None``: use zarr's."""
        if spec.config.write_empty_chunks:
            return cls(None, None, nan=False, never=True)
        dtype = np.dtype(dtype)
        bits = _BITS.get(dtype.itemsize)
        if bits is None or dtype.kind not in "biuf" or spec.fill_value is None:
            return None
        fill = np.asarray(spec.fill_value, dtype=dtype)
        if dtype.kind == "f" and np.isnan(fill):
            return cls(None, None, nan=True)
        return cls(bits, fill.view(bits)[()], nan=False)

    def __call__(self, chunk: np.ndarray) -> bool:
        """Whether zarr would skip this chunk (all fill value)."""
        if self._never:
            return False
        flat = chunk.reshape(-1)
        if self._nan:
            return bool(np.isnan(flat[0]) and np.isnan(flat).all())
        flat = flat.view(self._bits)
        return bool(flat[0] == self._target and not (flat != self._target).any())

    def empty_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """Per row of a 2-D matrix of chunks, whether it is all fill value (``None``: no row is)."""
        if self._never:
            return None
        maybe = np.isnan(rows[:, 0]) if self._nan else rows[:, 0].view(self._bits) == self._target
        if not maybe.any():
            return None
        for i in np.flatnonzero(maybe):
            maybe[i] = self(rows[i])
        return maybe


def _write_order(sharding: Sharding, chunks_per_shard: tuple[int, ...]) -> list[int]:
    """The C-order positions of the inner chunks in the order zarr's encoder lays them out."""
    codec = sharding.codec
    coords = codec._subchunk_order_iter(chunks_per_shard, codec.subchunk_write_order)
    return [int(np.ravel_multi_index(c, chunks_per_shard)) for c in coords]


class CpuShardEncoder:
    """Encodes full (padded) shards of one sharded array, as zarr would."""

    def __init__(
        self,
        sharding: Sharding,
        shard_spec: ArraySpec,
        stages: list[Encode],
        dtype: np.dtype,
        frames: ZstdFrames | None = None,
    ) -> None:
        self._sharding = sharding
        self._inner_shape = sharding.chunk_shape
        self._chunks_per_shard = sharding.chunks_per_shard(shard_spec.shape)
        self._inner_spec = sharding.codec._get_chunk_spec(shard_spec)
        self._order = _write_order(sharding, self._chunks_per_shard)
        self._stages = stages
        self._frames = frames
        self._shard_shape = tuple(shard_spec.shape)
        empty = FillCheck.for_spec(self._inner_spec, dtype)
        assert empty is not None  # for_array checked
        self._empty = empty

    @classmethod
    def for_array(cls, array: zarr.Array, shard_spec: ArraySpec) -> CpuShardEncoder | None:
        try:
            chain = parse_codecs(array._async_array.codec_pipeline)
        except ValueError:
            return None
        sharding = chain.sharding
        if sharding is None or chain.array_array or chain.bytes_bytes:
            return None
        if sharding.chunks_per_shard(shard_spec.shape) is None or sharding.index_crc32c is None:
            return None
        inner = sharding.inner
        dtype = np.dtype(array.dtype)
        if not inner.plain_bytes or inner.array_array or dtype.kind not in "biuf" or dtype.fields is not None:
            return None
        if storage_dtype(dtype, inner.endian) != dtype:  # the array's bytes are not the stored ones
            return None
        if FillCheck.for_spec(sharding.codec._get_chunk_spec(shard_spec), dtype) is None:
            return None
        stages = [numcodecs_encoder(c) for c in inner.bytes_bytes]
        if any(stage is None for stage in stages):
            return None
        return cls(sharding, shard_spec, stages, dtype, frames_for(inner.bytes_bytes))

    def encode(self, shard: np.ndarray, extent: tuple[int, ...] | None = None) -> Any:
        """The shard's bytes (``None`` when every inner chunk is empty and elided).

        ``extent``: the shape of the shard's data before it was padded (an edge shard). As zarr
        does, inner chunks wholly in the padding are not stored, even with ``write_empty_chunks``.
        """
        return self.encode_rows(self.block_rows(shard, (1,) * shard.ndim)[0], extent)

    def block_rows(self, block: np.ndarray, units: tuple[int, ...]) -> np.ndarray:
        """A block of ``units`` whole shards (per axis) as one ``(shards, inner chunks, inner chunk)``
        array, each shard's inner chunks in C order of their coordinates: one numpy copy."""
        return chunk_matrix(np, block, units, self._chunks_per_shard, self._inner_shape, None)

    @property
    def native_layout(self) -> tuple[ZstdFrames, UnitLayout] | None:
        """A chain of zstd alone: its compressor and the layout of a shard's file (``cpu/native.py``)."""
        if self._frames is None:
            return None
        sharding = self._sharding
        order = np.asarray(self._order, np.int64)
        return self._frames, UnitLayout(len(order), order, sharding.index_location, bool(sharding.index_crc32c))

    def stored_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A block of whole shards (:meth:`block_rows`) as one ``uint8`` row per inner chunk (the
        bytes stored: the array's own), and which of those rows zarr would not store (``None``: none)."""
        inner = rows.reshape(-1, rows.shape[-1])
        return inner.view(np.uint8), self._empty.empty_rows(inner)

    def encode_rows(self, rows: np.ndarray, extent: tuple[int, ...] | None = None) -> Any:
        """The bytes of one shard whose inner chunks are the rows of ``rows`` (see :meth:`encode`)."""
        stored = self._stored(rows, extent)
        if not stored:
            return None
        if self._frames is not None:
            return self._pack(rows, stored)
        encoded: list[Any] = [None] * len(rows)
        for i in stored:
            data: Any = rows[i].view(np.uint8)
            for stage in self._stages:
                data = stage(data)
            encoded[i] = memoryview(data).cast("B") if isinstance(data, np.ndarray) else data
        sharding = self._sharding
        return build_shard(encoded, self._chunks_per_shard, sharding.index_location, sharding.index_crc32c, self._order)

    def _stored(self, rows: np.ndarray, extent: tuple[int, ...] | None) -> list[int]:
        """The C-order positions of the inner chunks zarr stores, in the order it writes them."""
        skip = self._empty.empty_rows(rows)
        if extent is not None and tuple(extent) != self._shard_shape:
            outside = ~self._inside(extent)
            skip = outside if skip is None else skip | outside
        return self._order if skip is None else [i for i in self._order if not skip[i]]

    def _pack(self, rows: np.ndarray, stored: list[int]) -> memoryview:
        """A zstd-only chain: the stored inner chunks' frames written one after another into one
        buffer by :mod:`.zstd_frames`, then the index (no per-chunk ``bytes``, no joining copy)."""
        sharding, frames = self._sharding, self._frames
        index_nbytes = shard_index_nbytes(self._chunks_per_shard, sharding.index_crc32c)
        at_start = sharding.index_location == "start"
        out = np.empty(index_nbytes + len(stored) * frames.bound(rows.shape[1] * rows.itemsize), np.uint8)
        start = index_nbytes if at_start else 0
        sizes = frames.pack_rows(rows, stored, out, start)
        index = shard_index(sizes, stored, start, sharding.index_crc32c)
        body_end = start + sum(sizes)
        if at_start:
            out[:index_nbytes] = np.frombuffer(index, np.uint8)
            return memoryview(out)[:body_end]
        out[body_end : body_end + index_nbytes] = np.frombuffer(index, np.uint8)
        return memoryview(out)[: body_end + index_nbytes]

    def _inside(self, extent: tuple[int, ...]) -> np.ndarray:
        """Per inner chunk (C order), whether it holds any of the data of an edge shard of ``extent``."""
        axes = [np.arange(n) * c < e for n, c, e in zip(self._chunks_per_shard, self._inner_shape, extent, strict=True)]
        inside = np.ones((), bool)
        for axis in axes:
            inside = np.logical_and.outer(inside, axis)
        return inside.reshape(-1)
