"""Can a zarr v3 array's chunks be encoded on the GPU with nvCOMP? Pure CPU, no cupy.

:func:`classify` reads an array's codec chain (through :func:`~hdmf_zarr_parallel.chain.parse_codecs`,
the parser the CPU shard encoder uses too) and returns either a :class:`GpuCodecPlan`
(what to encode on the device, and how the bytes must be framed and assembled so that
stock zarr reads them) or an :class:`Unsupported` with a human reason.

Supported chains (everything else is refused, with a reason):

* ``[bytes(little|native), (numcodecs.shuffle)?, C]`` where ``C`` is a compressor one of
  the output algorithms of :mod:`.algorithms` writes (``zstd`` / ``numcodecs.zstd`` without
  checksum, ``gzip`` / ``numcodecs.gzip``, ``numcodecs.lz4``, ``numcodecs.zlib``), and the
  optional ``numcodecs.shuffle`` byte shuffle runs on the device before it (HDF5's shuffle
  filter);

* ``[bytes(little|native), (numcodecs.shuffle)?, blosc]`` with zarr's ``blosc`` or
  ``numcodecs.blosc`` whose ``cname`` is ``zstd``, ``lz4`` or ``lz4hc`` and ``clevel`` 1-9, with
  no shuffle, byte shuffle or bitshuffle: c-blosc 1 chunks built around nvCOMP's output
  (:mod:`.blosc_frame`); chunks under 128 bytes (which c-blosc only copies) are refused;

* the same chains as the inner codecs of ``sharding_indexed`` whose index codecs are
  ``[bytes(little)]`` optionally followed by ``[crc32c]``.

nvCOMP has no compression-level knob: ``level`` is what the metadata says (and stays in
the metadata); the achieved ratio is whatever nvCOMP gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from ..chain import Chain, IndexLocation, codec_config, codec_name, parse_codecs, storage_dtype
from . import algorithms

__all__ = ["GpuCodecPlan", "Unsupported", "classify"]

# numpy kinds cupy can hold and nvCOMP can compress as plain bytes
_SUPPORTED_KINDS = {"b": "bool", "i": "signed integer", "u": "unsigned integer", "f": "float", "c": "complex"}


@dataclass(frozen=True)
class Unsupported:
    """The GPU path cannot write this array; ``reason`` says why (for logs and errors)."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class GpuCodecPlan:
    """How to encode one array's chunks on the GPU so that stock zarr reads them back.

    ``chunk_shape`` is the shape of one unit the GPU encodes: the inner chunk shape when
    ``sharded``, else the array's chunk shape. Edge chunks are padded to it with
    ``fill_value`` before encoding (zarr does the same).
    """

    #: the name of its output algorithm (:func:`.algorithms.get` gives the object)
    algorithm: str
    level: int | None
    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    byte_order: Literal["little", "native"]
    sharded: bool = False
    shard_shape: tuple[int, ...] | None = None
    chunks_per_shard: tuple[int, ...] | None = None
    index_location: IndexLocation | None = None
    index_crc32c: bool = False
    fill_value: Any = None
    codec_name: str = ""
    #: ``numcodecs.shuffle``'s element size when the chain shuffles bytes before compressing
    shuffle_elementsize: int | None = None
    #: what else of the codec configuration the bytes depend on (:meth:`.algorithms.Algorithm.params`;
    #: Blosc: cname, clevel, shuffle, typesize)
    params: Any = None

    def __bool__(self) -> bool:
        return True

    @property
    def chunk_nbytes(self) -> int:
        """Uncompressed bytes of one (padded) unit the GPU encodes."""
        return int(math.prod(self.chunk_shape)) * self.dtype.itemsize

    @property
    def inner_chunks_per_shard(self) -> int:
        return int(math.prod(self.chunks_per_shard)) if self.chunks_per_shard else 1


class _Parsed(NamedTuple):
    """What a supported chain tells the plan."""

    algorithm: str
    level: int | None
    endian: str | None
    codec_name: str
    shuffle_elementsize: int | None
    params: Any = None


def _parse_chain(chain: Chain, where: str) -> _Parsed | Unsupported:
    """``[bytes, (numcodecs.shuffle)?, compressor]`` -> what the plan needs, or why the GPU cannot write it."""
    if chain.array_array:
        return Unsupported(
            f"{where}: array-to-array codec '{codec_name(chain.array_array[0])}' (e.g. transpose, delta, "
            "scale_offset) is not supported on the GPU path"
        )
    if chain.sharding is not None:
        return Unsupported(f"{where}: nested sharding is not supported on the GPU path")
    if not chain.plain_bytes:
        return Unsupported(
            f"{where}: serializer '{codec_name(chain.serializer)}' is not supported on the GPU path "
            "(only 'bytes'; variable-length and string codecs are CPU-only)"
        )
    if chain.endian == "big":
        return Unsupported(f"{where}: big-endian 'bytes' codec is not supported on the GPU path")
    rest = chain.bytes_bytes
    shuffle = None
    if len(rest) == 2 and codec_name(rest[0]) == "numcodecs.shuffle":
        shuffle = int(codec_config(rest[0]).get("elementsize", 4))
        rest = rest[1:]
    if not rest:
        return Unsupported(f"{where}: no compressor (nothing for the GPU to do; the CPU path writes it)")
    if len(rest) > 1:
        names = ", ".join(codec_name(c) for c in rest)
        return Unsupported(f"{where}: more than one bytes-to-bytes codec ({names}) is not supported on the GPU path")
    name, config = codec_name(rest[0]), codec_config(rest[0])
    algorithm = algorithms.for_codec_name(name, config)
    if algorithm is not None:
        refused = algorithm.refuse(name, config)
        if refused:
            return Unsupported(f"{where}: {refused} is not supported on the GPU path")
        params = algorithm.params(name, config)
        return _Parsed(algorithm.name, algorithm.level(config), chain.endian, name, shuffle, params)
    if "shuffle" in name.lower():
        return Unsupported(f"{where}: shuffle filter '{name}' is not supported on the GPU path")
    if name in ("crc32c", "numcodecs.crc32c", "numcodecs.crc32", "numcodecs.adler32"):
        return Unsupported(f"{where}: checksum codec '{name}' without a compressor is not supported on the GPU path")
    known = ", ".join(algorithms.known_codec_names())
    return Unsupported(f"{where}: compressor '{name}' is not supported on the GPU path ({known} are)")


def classify(array: Any) -> GpuCodecPlan | Unsupported:
    """Classify a ``zarr.Array`` (or ``AsyncArray``) for the GPU path. Never raises for a
    well-formed zarr array; anything unexpected becomes :class:`Unsupported`."""
    try:
        return _classify(array)
    except Exception as exc:  # defensive: an exotic array must not break engine selection
        return Unsupported(f"could not classify the array's codecs: {type(exc).__name__}: {exc}")


def _classify(array: Any) -> GpuCodecPlan | Unsupported:
    meta = getattr(array, "metadata", None)
    if meta is None:
        return Unsupported("not a zarr array (no .metadata)")
    if getattr(meta, "zarr_format", None) != 3:
        return Unsupported("only zarr format 3 arrays are supported on the GPU path")

    # dtype
    try:
        native = np.dtype(meta.data_type.to_native_dtype())
    except Exception as exc:
        return Unsupported(f"data type {meta.data_type!r} has no numpy equivalent ({exc})")
    if native.fields is not None:
        return Unsupported(f"structured/compound dtype {native} is not supported on the GPU path")
    if native.kind == "T" or str(native).startswith("StringDType"):
        return Unsupported(f"variable-length string dtype {native} is not supported on the GPU path")
    if native.kind in ("U", "S", "V"):
        return Unsupported(f"string/bytes dtype {native} is not supported on the GPU path")
    if native.hasobject or native.kind == "O":
        return Unsupported(f"object (variable-length) dtype {native} is not supported on the GPU path")
    if native.kind not in _SUPPORTED_KINDS:
        return Unsupported(f"dtype {native} (kind {native.kind!r}) is not supported on the GPU path")

    # chunk grid
    grid = meta.chunk_grid
    grid_shape = getattr(grid, "chunk_shape", None)
    if grid_shape is None:
        return Unsupported(f"chunk grid {type(grid).__name__} is not a regular grid")
    grid_shape = tuple(int(s) for s in grid_shape)

    chain = parse_codecs(meta.codecs)
    fill_value = meta.fill_value
    sharding = chain.sharding
    if sharding is None:
        parsed = _parse_chain(chain, "codecs")
        if isinstance(parsed, Unsupported):
            return parsed
        return _plan(parsed, native, grid_shape, fill_value)

    if chain.array_array or chain.bytes_bytes:
        names = ", ".join(codec_name(c) for c in (*chain.array_array, chain.serializer, *chain.bytes_bytes))
        return Unsupported(f"sharding must be the only top-level codec on the GPU path (got {names})")
    parsed = _parse_chain(sharding.inner, "shard inner codecs")
    if isinstance(parsed, Unsupported):
        return parsed
    if sharding.index_problem is not None:
        return Unsupported(f"{sharding.index_problem} is not supported on the GPU path")
    chunks_per_shard = sharding.chunks_per_shard(grid_shape)
    if chunks_per_shard is None:
        return Unsupported(
            f"shard shape {grid_shape} is not a multiple of the inner chunk shape {sharding.chunk_shape}"
        )
    return _plan(
        parsed,
        native,
        sharding.chunk_shape,
        fill_value,
        sharded=True,
        shard_shape=grid_shape,
        chunks_per_shard=chunks_per_shard,
        index_location=sharding.index_location,
        index_crc32c=bool(sharding.index_crc32c),
    )


def _plan(
    parsed: _Parsed, native: np.dtype, chunk_shape: tuple[int, ...], fill_value: Any, **shard_fields: Any
) -> GpuCodecPlan | Unsupported:
    """The plan for a parsed chain, refused when its shuffle cannot split a chunk into whole elements."""
    plan = GpuCodecPlan(
        algorithm=parsed.algorithm,
        level=parsed.level,
        dtype=storage_dtype(native, parsed.endian),
        chunk_shape=chunk_shape,
        byte_order="little" if parsed.endian == "little" else "native",
        fill_value=fill_value,
        codec_name=parsed.codec_name,
        shuffle_elementsize=parsed.shuffle_elementsize,
        params=parsed.params,
        **shard_fields,
    )
    refused = algorithms.get(plan.algorithm).refuse_plan(plan)
    if refused:
        return Unsupported(refused)
    return _whole_elements(plan)


def _whole_elements(plan: GpuCodecPlan) -> GpuCodecPlan | Unsupported:
    """numcodecs' shuffle refuses a chunk that is not a whole number of its elements."""
    size = plan.shuffle_elementsize
    if size and size > 1 and plan.chunk_nbytes % size:
        return Unsupported(
            f"a chunk of {plan.chunk_nbytes} bytes is not a whole number of {size}-byte shuffle elements"
        )
    return plan
