"""Encode whole shards on the CPU with little time under the GIL.

zarr's ``ShardingCodec`` encodes a shard's inner chunks one by one through its generic
codec machinery (indexers, buffer wrappers, a sync transform per chunk); that Python work
holds the GIL, so threads encoding shards in parallel stop scaling early
(benchmarks/RESULTS.md has the measurements).

Here the inner chunks are cut with numpy and passed straight to the very numcodecs codec
objects zarr's inner codecs call (``ZstdCodec._zstd_codec``, ``GzipCodec._gzip_codec``,
``numcodecs.*`` wrappers' ``_codec``), which release the GIL while they compress. The
empty-chunk rule is zarr's ``chunk_is_empty``. The shard is laid out by
:func:`~hdmf_zarr_parallel.shard_layout.build_shard`, the layout the GPU path uses too, with
the inner chunks in the order zarr's encoder writes them (the codec's
``subchunk_write_order``), so the bytes are identical to zarr's (``tests/test_cpu_shard.py``
compares them). The chain is read by :func:`~hdmf_zarr_parallel.chain.parse_codecs`; chains
this does not cover (array-to-array codecs, stored bytes other than the array's own, other
serializers, index codecs other than ``bytes`` + optional ``crc32c``) make
:meth:`CpuShardEncoder.for_array` return ``None``, and zarr encodes those shards itself.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import zarr
from zarr.abc.buffer import Buffer
from zarr.buffer import default_buffer_prototype

from .._zarr import Encode, chunk_is_empty, evolved_codecs, numcodecs_encoder, shard_inner_spec, shard_write_order
from ..chain import Sharding, parse_codecs, storage_dtype
from ..shard_layout import build_shard


class CpuShardEncoder:
    """Encodes full (padded) shards of one sharded array, as zarr would."""

    def __init__(self, sharding: Sharding, shard_spec: Any, stages: list[Encode]) -> None:
        self._sharding = sharding
        self._inner_shape = sharding.chunk_shape
        self._chunks_per_shard = sharding.chunks_per_shard(shard_spec.shape)
        self._inner_spec = shard_inner_spec(sharding.codec, shard_spec)
        self._order = shard_write_order(sharding.codec, self._chunks_per_shard)
        self._stages = stages
        self._prototype = default_buffer_prototype()

    @classmethod
    def for_array(cls, array: zarr.Array, shard_spec: Any) -> CpuShardEncoder | None:
        try:
            chain = parse_codecs(evolved_codecs(array))
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
        stages = [numcodecs_encoder(c) for c in inner.bytes_bytes]
        if any(stage is None for stage in stages):
            return None
        return cls(sharding, shard_spec, stages)

    def encode(self, shard: np.ndarray) -> Buffer | None:
        """The shard's bytes (``None`` when every inner chunk is empty and elided)."""
        encoded: list[Any] = []
        nd_buffer = self._prototype.nd_buffer
        for coords in itertools.product(*(range(n) for n in self._chunks_per_shard)):
            selection = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self._inner_shape, strict=True))
            chunk = np.ascontiguousarray(shard[selection])
            if chunk_is_empty(nd_buffer.from_numpy_array(chunk), self._inner_spec):
                encoded.append(None)
                continue
            data: Any = chunk.reshape(-1).view(np.uint8)
            for stage in self._stages:
                data = stage(data)
            encoded.append(data.tobytes() if isinstance(data, np.ndarray) else data)
        sharding = self._sharding
        shard_bytes = build_shard(
            encoded, self._chunks_per_shard, sharding.index_location, sharding.index_crc32c, self._order
        )
        return None if shard_bytes is None else self._prototype.buffer.from_bytes(shard_bytes)
