"""Can a zarr v3 array's chunks be encoded on the GPU with nvCOMP? Pure CPU, no cupy.

:func:`classify` reads an array's codec chain and returns either a :class:`GpuCodecPlan`
(what to encode on the device, and how the bytes must be framed and assembled so that
stock zarr reads them) or an :class:`Unsupported` with a human reason.

Supported chains (everything else is refused, with a reason):

* ``[bytes(little|native), (numcodecs.shuffle)?, C]`` where ``C`` is one of

  - ``zstd`` (:class:`zarr.codecs.ZstdCodec`, ``checksum=False``) or ``numcodecs.zstd``
    (no checksum): nvCOMP Zstd, RAW bitstream (a plain zstd frame);
  - ``gzip`` (:class:`zarr.codecs.GzipCodec`) or ``numcodecs.gzip``: nvCOMP Gzip, RAW
    (a gzip member);
  - ``numcodecs.lz4``: nvCOMP LZ4, RAW (a raw LZ4 block) plus numcodecs' 4-byte
    little-endian uncompressed-size header;
  - ``numcodecs.zlib``: nvCOMP Deflate, RAW (a raw deflate stream) between the zlib
    header and the Adler-32 trailer (what HDF5's gzip filter becomes in hdmf-zarr);

  and the optional ``numcodecs.shuffle`` byte shuffle runs on the device before it (HDF5's
  shuffle filter);

* the same chain as the inner codecs of ``sharding_indexed`` whose index codecs are
  ``[bytes(little)]`` optionally followed by ``[crc32c]``.

nvCOMP has no compression-level knob: ``level`` is what the metadata says (and stays in
the metadata); the achieved ratio is whatever nvCOMP gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["GpuCodecPlan", "Unsupported", "classify"]

Algorithm = Literal["zstd", "gzip", "lz4", "zlib"]
IndexLocation = Literal["start", "end"]

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

    algorithm: Algorithm
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

    def __bool__(self) -> bool:
        return True

    @property
    def chunk_nbytes(self) -> int:
        """Uncompressed bytes of one (padded) unit the GPU encodes."""
        return int(math.prod(self.chunk_shape)) * self.dtype.itemsize

    @property
    def inner_chunks_per_shard(self) -> int:
        return int(math.prod(self.chunks_per_shard)) if self.chunks_per_shard else 1


def _zarr_classes() -> dict[str, type]:
    from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec

    return {
        "bytes": BytesCodec,
        "crc32c": Crc32cCodec,
        "gzip": GzipCodec,
        "sharding": ShardingCodec,
        "zstd": ZstdCodec,
    }


def _codec_name(codec: Any) -> str:
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


def _numcodecs_config(codec: Any) -> dict:
    cfg = getattr(codec, "codec_config", None)
    return dict(cfg) if isinstance(cfg, dict) else {}


def _is_array_array(codec: Any) -> bool:
    from zarr.abc.codec import ArrayArrayCodec

    return isinstance(codec, ArrayArrayCodec)


def _is_bytes_bytes(codec: Any) -> bool:
    from zarr.abc.codec import BytesBytesCodec

    return isinstance(codec, BytesBytesCodec)


def _endian_of(bytes_codec: Any) -> str | None:
    endian = getattr(bytes_codec, "endian", None)
    return getattr(endian, "value", endian)  # enum or plain string or None


def _parse_chain(
    codecs: tuple[Any, ...], where: str
) -> tuple[Algorithm, int | None, str, str, int | None] | Unsupported:
    """Parse ``[bytes, (shuffle)?, compressor]`` -> (algorithm, level, byte_order, codec_name, shuffle element size)."""
    cls = _zarr_classes()
    codecs = tuple(codecs)
    if not codecs:
        return Unsupported(f"{where}: empty codec chain")
    for c in codecs:
        if _is_array_array(c):
            return Unsupported(
                f"{where}: array-to-array codec '{_codec_name(c)}' (e.g. transpose, delta, scale_offset) "
                "is not supported on the GPU path"
            )
    serializer, rest = codecs[0], codecs[1:]
    if isinstance(serializer, cls["sharding"]):
        return Unsupported(f"{where}: nested sharding is not supported on the GPU path")
    if not isinstance(serializer, cls["bytes"]):
        return Unsupported(
            f"{where}: serializer '{_codec_name(serializer)}' is not supported on the GPU path "
            "(only 'bytes'; variable-length and string codecs are CPU-only)"
        )
    endian = _endian_of(serializer)
    if endian == "big":
        return Unsupported(f"{where}: big-endian 'bytes' codec is not supported on the GPU path")
    if endian not in (None, "little"):
        return Unsupported(f"{where}: unknown 'bytes' endian {endian!r}")
    byte_order = "little" if endian == "little" else "native"
    for c in rest:
        if not _is_bytes_bytes(c):
            return Unsupported(f"{where}: unexpected codec '{_codec_name(c)}' after the serializer")
    shuffle = None
    if len(rest) == 2 and _codec_name(rest[0]) == "numcodecs.shuffle":
        shuffle = int(_numcodecs_config(rest[0]).get("elementsize", 4))
        rest = rest[1:]
    if not rest:
        return Unsupported(f"{where}: no compressor (nothing for the GPU to do; the CPU path writes it)")
    if len(rest) > 1:
        names = ", ".join(_codec_name(c) for c in rest)
        return Unsupported(f"{where}: more than one bytes-to-bytes codec ({names}) is not supported on the GPU path")
    comp = rest[0]
    name = _codec_name(comp)
    if isinstance(comp, cls["zstd"]):
        if comp.checksum:
            return Unsupported(f"{where}: zstd with checksum=True is not supported on the GPU path")
        return "zstd", int(comp.level), byte_order, "zstd", shuffle
    if isinstance(comp, cls["gzip"]):
        return "gzip", int(comp.level), byte_order, "gzip", shuffle
    if name == "numcodecs.zstd":
        cfg = _numcodecs_config(comp)
        if cfg.get("checksum"):
            return Unsupported(f"{where}: numcodecs.zstd with checksum=True is not supported on the GPU path")
        return "zstd", int(cfg.get("level", 0) or 0), byte_order, name, shuffle
    if name == "numcodecs.gzip":
        cfg = _numcodecs_config(comp)
        return "gzip", int(cfg.get("level", 1)), byte_order, name, shuffle
    if name == "numcodecs.lz4":
        cfg = _numcodecs_config(comp)
        return "lz4", int(cfg.get("acceleration", 1)), byte_order, name, shuffle
    if name == "numcodecs.zlib":
        cfg = _numcodecs_config(comp)
        return "zlib", int(cfg.get("level", 1)), byte_order, name, shuffle
    if "blosc" in name.lower():
        return Unsupported(f"{where}: blosc has no nvCOMP equivalent; the GPU path cannot write it")
    if "shuffle" in name.lower():
        return Unsupported(f"{where}: shuffle filter '{name}' is not supported on the GPU path")
    if name in ("crc32c", "numcodecs.crc32c", "numcodecs.crc32", "numcodecs.adler32"):
        return Unsupported(f"{where}: checksum codec '{name}' without a compressor is not supported on the GPU path")
    return Unsupported(f"{where}: compressor '{name}' is not supported on the GPU path (zstd, gzip, numcodecs.lz4 are)")


def _parse_index_codecs(index_codecs: tuple[Any, ...]) -> bool | Unsupported:
    """``[bytes(little)]`` or ``[bytes(little), crc32c]`` -> whether crc32c is present."""
    cls = _zarr_classes()
    index_codecs = tuple(index_codecs)
    if not index_codecs or not isinstance(index_codecs[0], cls["bytes"]):
        return Unsupported("shard index codecs must start with 'bytes'")
    if _endian_of(index_codecs[0]) not in ("little", None):
        return Unsupported("big-endian shard index is not supported on the GPU path")
    rest = index_codecs[1:]
    if not rest:
        return False
    if len(rest) == 1 and isinstance(rest[0], cls["crc32c"]):
        return True
    names = ", ".join(_codec_name(c) for c in rest)
    return Unsupported(f"shard index codecs other than bytes(+crc32c) are not supported on the GPU path ({names})")


def _storage_dtype(native: np.dtype, byte_order: str) -> np.dtype:
    """The dtype of the bytes zarr stores: little-endian for multi-byte types."""
    if native.itemsize == 1:
        return native
    return native.newbyteorder("<")


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

    codecs = tuple(meta.codecs)
    cls = _zarr_classes()
    sharding = [c for c in codecs if isinstance(c, cls["sharding"])]
    fill_value = meta.fill_value

    if sharding:
        if len(codecs) != 1 or not isinstance(codecs[0], cls["sharding"]):
            names = ", ".join(_codec_name(c) for c in codecs)
            return Unsupported(f"sharding must be the only top-level codec on the GPU path (got {names})")
        sh = codecs[0]
        parsed = _parse_chain(tuple(sh.codecs), "shard inner codecs")
        if isinstance(parsed, Unsupported):
            return parsed
        crc = _parse_index_codecs(tuple(sh.index_codecs))
        if isinstance(crc, Unsupported):
            return crc
        inner = tuple(int(s) for s in sh.chunk_shape)
        if len(inner) != len(grid_shape) or any(s % i for s, i in zip(grid_shape, inner, strict=True)):
            return Unsupported(f"shard shape {grid_shape} is not a multiple of the inner chunk shape {inner}")
        index_location = getattr(sh.index_location, "value", sh.index_location)
        if index_location not in ("start", "end"):
            return Unsupported(f"unknown shard index location {index_location!r}")
        return _plan(
            parsed,
            native,
            inner,
            fill_value,
            sharded=True,
            shard_shape=grid_shape,
            chunks_per_shard=tuple(s // i for s, i in zip(grid_shape, inner, strict=True)),
            index_location=index_location,
            index_crc32c=bool(crc),
        )

    parsed = _parse_chain(codecs, "codecs")
    if isinstance(parsed, Unsupported):
        return parsed
    return _plan(parsed, native, grid_shape, fill_value)


def _plan(
    parsed: tuple[Algorithm, int | None, str, str, int | None],
    native: np.dtype,
    chunk_shape: tuple[int, ...],
    fill_value: Any,
    **shard_fields: Any,
) -> GpuCodecPlan | Unsupported:
    """The plan for a parsed chain, refused when its shuffle cannot split a chunk into whole elements."""
    algorithm, level, byte_order, name, shuffle = parsed
    plan = GpuCodecPlan(
        algorithm=algorithm,
        level=level,
        dtype=_storage_dtype(native, byte_order),
        chunk_shape=chunk_shape,
        byte_order=byte_order,  # type: ignore[arg-type]
        fill_value=fill_value,
        codec_name=name,
        shuffle_elementsize=shuffle,
        **shard_fields,
    )
    return _whole_elements(plan)


def _whole_elements(plan: GpuCodecPlan) -> GpuCodecPlan | Unsupported:
    """numcodecs' shuffle refuses a chunk that is not a whole number of its elements."""
    size = plan.shuffle_elementsize
    if size and size > 1 and plan.chunk_nbytes % size:
        return Unsupported(
            f"a chunk of {plan.chunk_nbytes} bytes is not a whole number of {size}-byte shuffle elements"
        )
    return plan
