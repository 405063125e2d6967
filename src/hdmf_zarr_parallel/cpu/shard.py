"""Encode whole shards on the CPU with little time under the GIL.

zarr's ``ShardingCodec`` encodes a shard's inner chunks one by one through its generic
codec machinery (indexers, buffer wrappers, a sync transform per chunk); that Python work
holds the GIL, so threads encoding shards in parallel stop scaling early
(benchmarks/RESULTS.md has the measurements).

Here the inner chunks are cut with numpy and passed straight to the very numcodecs codec
objects zarr's inner codecs call (``ZstdCodec._zstd_codec``, ``GzipCodec._gzip_codec``,
``numcodecs.*`` wrappers' ``_codec``), which release the GIL while they compress. The
shard is cut into its inner chunks with one numpy copy (:func:`inner_rows`, as
``gpu.rows.chunk_matrix`` carves tiles) and the empty-chunk rule is zarr's ``chunk_is_empty`` without its buffer
wrappers (:class:`FillCheck`). The shard is laid out by
:func:`~hdmf_zarr_parallel.shard_layout.build_shard`, the layout the GPU path uses too, with
the inner chunks in the order zarr's encoder writes them (the codec's
``subchunk_write_order``), so the bytes are identical to zarr's (``tests/test_cpu_shard.py``
compares them). The chain is read by :func:`~hdmf_zarr_parallel.chain.parse_codecs`; chains
this does not cover (array-to-array codecs, stored bytes other than the array's own, other
serializers, index codecs other than ``bytes`` + optional ``crc32c``) make
:meth:`CpuShardEncoder.for_array` return ``None``, and zarr encodes those shards itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import zarr
from zarr.core.array_spec import ArraySpec

from .._zarr import numcodecs_encoder
from ..chain import Sharding, parse_codecs, storage_dtype
from ..shard_layout import build_shard

Encode = Callable[[Any], Any]
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def inner_rows(shard: np.ndarray, chunks_per_shard: tuple[int, ...], inner: tuple[int, ...]) -> np.ndarray:
    """A full shard's inner chunks as the rows of one C-contiguous array, in C order of their
    coordinates: one reshape/transpose copy (numpy releases the GIL while it copies)."""
    split = shard.reshape(tuple(x for nc in zip(chunks_per_shard, inner, strict=True) for x in nc))
    order = [*range(0, 2 * shard.ndim, 2), *range(1, 2 * shard.ndim, 2)]
    return np.ascontiguousarray(split.transpose(order)).reshape(math.prod(chunks_per_shard), math.prod(inner))


class FillCheck:
    """zarr's ``chunk_is_empty`` for C-contiguous numpy chunks of a numeric dtype, without wrappers.

    zarr (``NDBuffer.all_equal``) compares bit patterns for a 0.0 fill (so -0.0 is data), treats
    every NaN as equal to a NaN fill, and compares values otherwise; for the dtypes here, values
    are equal exactly when their bits are. The first element is checked first: a chunk of data
    almost never starts with the fill value, so the whole-chunk comparison (one numpy pass, which
    releases the GIL) runs only for chunks that may be empty.
    """

    @staticmethod
    def for_spec(spec: ArraySpec, dtype: np.dtype) -> Callable[[np.ndarray], bool] | None:
        """The check for chunks of ``spec`` (never empty with ``write_empty_chunks``); ``None``: use zarr's."""
        if spec.config.write_empty_chunks:
            return lambda chunk: False
        dtype = np.dtype(dtype)
        bits = _BITS.get(dtype.itemsize)
        if bits is None or dtype.kind not in "biuf" or spec.fill_value is None:
            return None
        fill = np.asarray(spec.fill_value, dtype=dtype)
        if dtype.kind == "f" and np.isnan(fill):

            def empty(chunk: np.ndarray) -> bool:
                flat = chunk.reshape(-1)
                return bool(np.isnan(flat[0]) and np.isnan(flat).all())

            return empty
        target = fill.view(bits)[()]

        def empty(chunk: np.ndarray) -> bool:
            flat = chunk.reshape(-1).view(bits)
            return bool(flat[0] == target and not (flat != target).any())

        return empty


def _write_order(sharding: Sharding, chunks_per_shard: tuple[int, ...]) -> list[int]:
    """The C-order positions of the inner chunks in the order zarr's encoder lays them out."""
    codec = sharding.codec
    coords = codec._subchunk_order_iter(chunks_per_shard, codec.subchunk_write_order)
    return [int(np.ravel_multi_index(c, chunks_per_shard)) for c in coords]


class CpuShardEncoder:
    """Encodes full (padded) shards of one sharded array, as zarr would."""

    def __init__(self, sharding: Sharding, shard_spec: ArraySpec, stages: list[Encode], dtype: np.dtype) -> None:
        self._sharding = sharding
        self._inner_shape = sharding.chunk_shape
        self._chunks_per_shard = sharding.chunks_per_shard(shard_spec.shape)
        self._inner_spec = sharding.codec._get_chunk_spec(shard_spec)
        self._order = _write_order(sharding, self._chunks_per_shard)
        self._stages = stages
        self._empty = FillCheck.for_spec(self._inner_spec, dtype)

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
        return cls(sharding, shard_spec, stages, dtype)

    def encode(self, shard: np.ndarray, extent: tuple[int, ...] | None = None) -> bytes | None:
        """The shard's bytes (``None`` when every inner chunk is empty and elided).

        ``extent``: the shape of the shard's data before it was padded (an edge shard). As zarr
        does, inner chunks wholly in the padding are not stored, even with ``write_empty_chunks``.
        """
        rows = inner_rows(shard, self._chunks_per_shard, self._inner_shape)
        empty = self._empty
        inside = None if extent is None or tuple(extent) == shard.shape else self._inside(extent)
        encoded: list[Any] = []
        for i, row in enumerate(rows):
            if (inside is not None and not inside[i]) or empty(row):
                encoded.append(None)
                continue
            data: Any = row.view(np.uint8)
            for stage in self._stages:
                data = stage(data)
            encoded.append(memoryview(data).cast("B") if isinstance(data, np.ndarray) else data)
        sharding = self._sharding
        return build_shard(encoded, self._chunks_per_shard, sharding.index_location, sharding.index_crc32c, self._order)

    def _inside(self, extent: tuple[int, ...]) -> np.ndarray:
        """Per inner chunk (C order), whether it holds any of the data of an edge shard of ``extent``."""
        axes = [np.arange(n) * c < e for n, c, e in zip(self._chunks_per_shard, self._inner_shape, extent, strict=True)]
        inside = np.ones((), bool)
        for axis in axes:
            inside = np.logical_and.outer(inside, axis)
        return inside.reshape(-1)
