"""A zarr v3 codec chain split by role: the one parser the CPU shard encoder and the GPU plan share.

zarr keeps an array's codecs as one list: array-to-array codecs (transpose, delta, ...),
exactly one array-to-bytes codec (the serializer: ``bytes``, ``sharding_indexed``,
``vlen-utf8``, ...), then bytes-to-bytes codecs (compressors, ``numcodecs.shuffle``,
checksums). :func:`parse_codecs` splits that list once into a :class:`Chain`, with the
``bytes`` codec's endianness normalised (:func:`endian_of`) and, for ``sharding_indexed``,
the inner chain and the index parsed the same way (:class:`Sharding`). The CPU shard
encoder (:mod:`.cpu.shard`) and the GPU plan (:mod:`.gpu.plan`) then decide what they can
encode from a :class:`Chain` instead of walking codec objects each in their own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

__all__ = ["Chain", "Sharding", "codec_config", "codec_name", "endian_of", "parse_codecs", "storage_dtype"]

Endian = Literal["little", "big"]
IndexLocation = Literal["start", "end"]


@dataclass(frozen=True)
class Sharding:
    """A ``sharding_indexed`` serializer: inner chunks encoded by ``inner``, and an index.

    The index holds ``(offset, nbytes)`` per inner chunk; :mod:`.shard_layout` builds it
    when the index codecs are ``bytes(little)`` with an optional ``crc32c``
    (``index_crc32c`` says which); for any other index chain ``index_crc32c`` is ``None``
    and ``index_problem`` says why.
    """

    codec: Any
    chunk_shape: tuple[int, ...]
    inner: Chain
    index_location: IndexLocation
    index_crc32c: bool | None
    index_problem: str | None = None

    def chunks_per_shard(self, shard_shape: Sequence[int]) -> tuple[int, ...] | None:
        """Inner chunks per shard along each axis; ``None`` when the shard is not a whole number of them."""
        shard_shape = tuple(int(s) for s in shard_shape)
        if len(shard_shape) != len(self.chunk_shape) or any(
            s % c for s, c in zip(shard_shape, self.chunk_shape, strict=True)
        ):
            return None
        return tuple(s // c for s, c in zip(shard_shape, self.chunk_shape, strict=True))


@dataclass(frozen=True)
class Chain:
    """One codec chain split by role (an array's, or a shard's inner one)."""

    array_array: tuple[Any, ...]
    serializer: Any
    bytes_bytes: tuple[Any, ...]
    #: what a ``bytes`` serializer writes (``None``: it does not say, as for one-byte types)
    endian: Endian | None = None
    sharding: Sharding | None = None

    @property
    def plain_bytes(self) -> bool:
        """Whether the serializer is ``bytes``: each chunk is its elements' bytes in C order."""
        return isinstance(self.serializer, BytesCodec)


def parse_codecs(codecs: Sequence[Any]) -> Chain:
    """Split a zarr v3 codec list; ``ValueError`` for a list zarr itself would refuse."""
    codecs = tuple(codecs)
    serializers = [i for i, c in enumerate(codecs) if isinstance(c, ArrayBytesCodec)]
    if len(serializers) != 1:
        raise ValueError(f"a codec chain holds one array-to-bytes codec, got {len(serializers)}")
    at = serializers[0]
    array_array, serializer, bytes_bytes = codecs[:at], codecs[at], codecs[at + 1 :]
    misplaced = [c for c in array_array if not isinstance(c, ArrayArrayCodec)]
    misplaced += [c for c in bytes_bytes if not isinstance(c, BytesBytesCodec)]
    if misplaced:
        raise ValueError(f"codec '{codec_name(misplaced[0])}' is out of place in the chain")
    if isinstance(serializer, ShardingCodec):
        return Chain(array_array, serializer, bytes_bytes, sharding=_parse_sharding(serializer))
    endian = endian_of(serializer) if isinstance(serializer, BytesCodec) else None
    return Chain(array_array, serializer, bytes_bytes, endian=endian)


def _parse_sharding(codec: Any) -> Sharding:
    location = getattr(codec.index_location, "value", codec.index_location)
    if location not in ("start", "end"):
        raise ValueError(f"unknown shard index location {location!r}")
    crc32c, problem = _parse_index_codecs(tuple(codec.index_codecs))
    return Sharding(
        codec=codec,
        chunk_shape=tuple(int(s) for s in codec.chunk_shape),
        inner=parse_codecs(codec.codecs),
        index_location=location,
        index_crc32c=crc32c,
        index_problem=problem,
    )


def _parse_index_codecs(index_codecs: tuple[Any, ...]) -> tuple[bool | None, str | None]:
    """``[bytes(little)]`` -> no crc32c, ``[bytes(little), crc32c]`` -> crc32c; else why not."""
    if not index_codecs or not isinstance(index_codecs[0], BytesCodec):
        return None, "shard index codecs must start with 'bytes'"
    if endian_of(index_codecs[0]) == "big":
        return None, "big-endian shard index"
    rest = index_codecs[1:]
    if not rest:
        return False, None
    if len(rest) == 1 and isinstance(rest[0], Crc32cCodec):
        return True, None
    return None, f"shard index codecs other than bytes(+crc32c) ({', '.join(codec_name(c) for c in rest)})"


def endian_of(bytes_codec: Any) -> Endian | None:
    """The byte order a ``bytes`` codec writes: ``"little"``, ``"big"``, or ``None`` where it does not say."""
    endian = getattr(bytes_codec, "endian", None)
    endian = getattr(endian, "value", endian)  # an enum, a plain string or None
    if endian not in (None, "little", "big"):
        raise ValueError(f"unknown 'bytes' endian {endian!r}")
    return endian


def storage_dtype(native: np.dtype, endian: Endian | None) -> np.dtype:
    """The dtype of the bytes a ``bytes`` codec writing ``endian`` stores for elements of ``native``:
    one-byte types as they are, wider ones little-endian unless the codec says big."""
    native = np.dtype(native)
    if native.itemsize == 1:
        return native
    return native.newbyteorder(">" if endian == "big" else "<")


def codec_name(codec: Any) -> str:
    """A codec's name as the array metadata spells it (``zstd``, ``numcodecs.lz4``, ...)."""
    name = getattr(codec, "codec_name", None)
    if isinstance(name, str) and name:
        return name
    try:
        d = codec.to_dict()
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            return d["name"]
    except Exception:
        pass
    return type(codec).__name__


def codec_config(codec: Any) -> dict:
    """A codec's configuration as the array metadata holds it (numcodecs' ``codec_config`` for wrapped ones)."""
    config = getattr(codec, "codec_config", None)
    if isinstance(config, dict):
        return dict(config)
    try:
        d = codec.to_dict()
        config = d.get("configuration") if isinstance(d, dict) else None
    except Exception:
        config = None
    return dict(config) if isinstance(config, dict) else {}
