"""Encode whole shards on the CPU with little time under the GIL.

zarr's ``ShardingCodec`` encodes a shard's inner chunks one by one through its generic
codec machinery (indexers, buffer wrappers, a sync transform per chunk). That Python
work holds the GIL for about 16 % of a shard of 48 inner chunks of 64 KiB, so threads
encoding shards in parallel stop scaling early: 1.72x on 2 threads, and at most ~5x on
any number of cores (benchmarks/RESULTS.md).

Here the inner chunks are cut with numpy and passed straight to the very numcodecs
codec objects zarr's inner codecs call (``ZstdCodec._zstd_codec``, ``GzipCodec._gzip_codec``,
``numcodecs.*`` wrappers' ``_codec``), which release the GIL while they compress. The
empty-chunk rule is zarr's ``chunk_is_empty``, and the shard (inner chunk order, index,
index codecs) is laid out by zarr's own ``ShardingCodec._encode_shard_dict_sync``, so the
bytes are identical to zarr's (``tests/test_cpu_shard.py`` compares them). Inner chains
this does not cover (array-to-array codecs, big-endian bytes, other bytes codecs) return ``None``
from :meth:`CpuShardEncoder.for_array`, and zarr encodes those shards itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.chunk_utils import chunk_is_empty

Encode = Callable[[Any], Any]


def _numcodecs_encoder(codec: Any) -> Encode | None:
    """The numcodecs ``encode`` zarr calls for one bytes-to-bytes codec, or ``None``."""
    from zarr.codecs.numcodecs._codecs import _NumcodecsBytesBytesCodec

    if isinstance(codec, ZstdCodec):
        return codec._zstd_codec.encode
    if isinstance(codec, GzipCodec):
        return codec._gzip_codec.encode
    if isinstance(codec, BloscCodec):  # evolved by zarr: its typesize is the array's
        return codec._blosc_codec.encode
    if isinstance(codec, _NumcodecsBytesBytesCodec):
        return codec._codec.encode
    return None


class CpuShardEncoder:
    """Encodes full (padded) shards of one sharded array, as zarr would."""

    def __init__(self, sharding: ShardingCodec, shard_spec: ArraySpec, stages: list[Encode]) -> None:
        self._sharding = sharding
        self._shard_shape = tuple(shard_spec.shape)
        self._inner_shape = tuple(sharding.chunk_shape)
        self._chunks_per_shard = tuple(s // c for s, c in zip(self._shard_shape, self._inner_shape, strict=True))
        self._inner_spec = sharding._get_chunk_spec(shard_spec)
        self._stages = stages
        self._prototype = default_buffer_prototype()

    @classmethod
    def for_array(cls, array: zarr.Array, shard_spec: ArraySpec) -> CpuShardEncoder | None:
        codecs = tuple(array._async_array.codec_pipeline)
        sharding = next((c for c in codecs if isinstance(c, ShardingCodec)), None)
        if sharding is None or len(codecs) != 1:
            return None
        if any(s % c for s, c in zip(shard_spec.shape, sharding.chunk_shape, strict=True)):
            return None
        serializer, *compressors = sharding.codecs
        dtype = np.dtype(array.dtype)
        if not isinstance(serializer, BytesCodec) or dtype.kind not in "biuf" or dtype.fields is not None:
            return None
        little = dtype.byteorder in "<|" or (dtype.byteorder == "=" and np.little_endian)
        endian = getattr(serializer.endian, "value", serializer.endian)
        if not little or (dtype.itemsize > 1 and endian not in ("little", None)):
            return None
        stages = [_numcodecs_encoder(c) for c in compressors]
        if any(stage is None for stage in stages):
            return None
        return cls(sharding, shard_spec, stages)

    def encode(self, shard: np.ndarray) -> Buffer | None:
        """The shard's bytes (``None`` when every inner chunk is empty and elided)."""
        shard_dict: dict[tuple[int, ...], Buffer | None] = {}
        nd_buffer = self._prototype.nd_buffer
        for coords in itertools.product(*(range(n) for n in self._chunks_per_shard)):
            selection = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self._inner_shape, strict=True))
            chunk = np.ascontiguousarray(shard[selection])
            if chunk_is_empty(nd_buffer.from_numpy_array(chunk), self._inner_spec):
                shard_dict[coords] = None
                continue
            data: Any = chunk.reshape(-1).view(np.uint8)
            for stage in self._stages:
                data = stage(data)
            if isinstance(data, np.ndarray):
                data = data.tobytes()
            shard_dict[coords] = self._prototype.buffer.from_bytes(data)
        return self._sharding._encode_shard_dict_sync(shard_dict, self._chunks_per_shard, self._prototype)
