"""What ``convert`` decides before any data moves: its options, the codecs they name, which
datasets go through the engines, and where each streamed dataset's chunks, shards and iterator
buffers fall.

Shared by the HDF5 path (:mod:`.convert_io`) and the Zarr v2 path (:mod:`.zarr_v2`); it imports
neither, nor the IO classes, so the command line can read its choices (``CODECS``, the defaults)
without loading the write path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hdmf.data_utils import GenericDataChunkIterator

from ..errors import ConvertError
from ..options import DEFAULT_MAX_INFLIGHT_BYTES, ENGINES
from .convert_presets import KEEP, LAYOUTS, PRESETS, conflicting_options, preset_layout

CODECS = ("zstd", "gzip", "lz4", "blosc")
DEFAULT_STREAM_MIN_BYTES = 1 << 20  # numeric datasets from 1 MiB up go through the engines
DEFAULT_BUFFER_BYTES = 64 << 20  # bytes per iterator buffer (whole chunks / shards)


@dataclass(frozen=True)
class ConvertOptions:
    """How :func:`~.convert.convert` writes. ``None`` everywhere means "what stock export does".

    The layout options (``chunks``, ``chunk_mb``, ``shards``) apply to the streamed datasets;
    ``codec``/``level`` to every numeric dataset. ``shards`` is a shard shape (for arrays of
    its rank) or an int ``k``: shards ``k`` chunks long on the first axis, spanning the
    array on the others (see :func:`plan_layout`). ``layout`` names a preset of
    :mod:`.convert_presets` (codec, chunks and shards of the streamed datasets), which refuses
    the options it sets; ``"keep"`` is none.
    """

    engine: str = "auto"
    workers: int | None = None
    codec: str | None = None  # None: HDF5's filters mapped to zarr codecs, else zarr's default (zstd)
    level: int | None = None
    chunks: tuple[int, ...] | None = None  # for streamed arrays of this rank
    chunk_mb: float | None = None  # target chunk size for streamed arrays (hdmf's chunk_mb heuristic)
    shards: tuple[int, ...] | int | None = None
    stream_min_bytes: int = DEFAULT_STREAM_MIN_BYTES
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    overwrite: bool = False
    verify: bool = False
    progress: bool | dict[str, Any] = False
    client: Any = None  # engine="dask": a distributed.Client (None: the current one)
    allow_pickle: bool = False  # Zarr v2 input: decode pickle-encoded datasets (trusted files only)
    layout: str = KEEP  # a preset of convert_presets.PRESETS, or "keep"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConvertError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.codec is not None and self.codec not in CODECS:
            raise ConvertError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.layout not in LAYOUTS:
            raise ConvertError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        given = {name: getattr(self, name) for name in ("codec", "level", "chunks", "chunk_mb", "shards")}
        if refusal := conflicting_options(self.layout, given):
            raise ConvertError(refusal)
        if self.level is not None and self.codec is None:
            raise ConvertError("--level needs --codec")
        if self.codec is not None:
            make_compressors(self.codec, self.level)  # range checks
        if self.chunks is not None and self.chunk_mb is not None:
            raise ConvertError("give either a chunk shape or a target chunk size, not both")
        if self.chunks is not None and (not self.chunks or any(int(c) < 1 for c in self.chunks)):
            raise ConvertError(f"chunk shape must be positive integers, got {self.chunks}")
        if self.chunk_mb is not None and not self.chunk_mb > 0:
            raise ConvertError(f"target chunk size must be > 0 MB, got {self.chunk_mb}")
        if isinstance(self.shards, int) and self.shards < 1:
            raise ConvertError(f"--shards must be >= 1, got {self.shards}")
        if isinstance(self.shards, tuple) and (not self.shards or any(s < 1 for s in self.shards)):
            raise ConvertError(f"shard shape must be positive integers, got {self.shards}")
        for name in ("stream_min_bytes", "buffer_bytes", "max_inflight_bytes"):
            if getattr(self, name) < 1:
                raise ConvertError(f"{name} must be >= 1")


def make_compressors(codec: str, level: int | None = None) -> list:
    """The zarr v3 compressor for a codec name and level (``None``: the codec's default level).

    zstd → ``ZstdCodec(level)`` (0 = zstd's default, 3), gzip → ``GzipCodec(level)`` (0-9,
    default 5), lz4 → numcodecs ``LZ4(acceleration=level)`` (≥ 1, default 1: lz4 has speed,
    not level), blosc → ``BloscCodec(cname="zstd", clevel=level)`` (0-9, default 5, byte shuffle).
    """
    import zarr.codecs
    from zarr.codecs import numcodecs as zn

    def check(lo: int, hi: int | None) -> None:
        if level is not None and (level < lo or (hi is not None and level > hi)):
            raise ConvertError(f"--level for {codec} must be in {lo}..{hi if hi is not None else ''}, got {level}")

    if codec == "zstd":
        check(-131072, 22)
        return [zarr.codecs.ZstdCodec(level=0 if level is None else level)]
    if codec == "gzip":
        check(0, 9)
        return [zarr.codecs.GzipCodec(level=5 if level is None else level)]
    if codec == "lz4":
        check(1, None)
        return [zn.LZ4(acceleration=1 if level is None else level)]
    if codec == "blosc":
        check(0, 9)
        return [zarr.codecs.BloscCodec(cname="zstd", clevel=5 if level is None else level, shuffle="shuffle")]
    raise ConvertError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def is_streamable(dataset: Any, options: ConvertOptions) -> bool:
    """Whether a source dataset (h5py or zarr) goes through the engines: plain numeric, not empty,
    at least ``options.stream_min_bytes``. Everything else takes hdmf-zarr's own copy."""
    dtype = dataset.dtype
    return (
        dtype.names is None
        and dtype.kind in "biuf"
        and dataset.ndim >= 1
        and all(s > 0 for s in dataset.shape)
        and dataset.size * dtype.itemsize >= options.stream_min_bytes
    )


@dataclass(frozen=True)
class Layout:
    """Where a streamed dataset's chunks, shards and iterator buffers fall."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    buffer_shape: tuple[int, ...]


def _default_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """The chunks zarr picks when given none, as stock export's ``require_array`` does."""
    import zarr
    from zarr.storage import MemoryStore

    return tuple(zarr.create_array(store=MemoryStore(), shape=shape, dtype=dtype).chunks)


def plan_layout(dataset: Any, options: ConvertOptions) -> Layout:
    """Chunks and shards: those of ``options.layout``'s preset (:func:`.convert_presets.preset_layout`),
    else :func:`_option_geometry`. Buffers: whole shards/chunks along axis 0, full extent on
    the other axes, about ``options.buffer_bytes`` each."""
    shape = tuple(int(s) for s in dataset.shape)
    itemsize = dataset.dtype.itemsize
    if options.layout != KEEP:
        chunks, shards = preset_layout(PRESETS[options.layout], shape, itemsize)
    else:
        chunks, shards = _option_geometry(dataset, shape, options)
    unit = shards or chunks
    row = max(1, math.prod(shape[1:]) * itemsize)
    k = max(1, options.buffer_bytes // (unit[0] * row))
    buffer_shape = (min(shape[0], k * unit[0]), *shape[1:])
    return Layout(chunks=chunks, shards=shards, buffer_shape=buffer_shape)


def _option_geometry(
    dataset: Any, shape: tuple[int, ...], options: ConvertOptions
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Chunks: ``options.chunks`` (arrays of its rank), ``options.chunk_mb`` (hdmf's heuristic),
    the source dataset's own chunks (what stock export keeps), else zarr's default.
    Shards: a shape (arrays of its rank) or ``k`` chunks along axis 0 and whole chunks elsewhere."""
    if options.chunks is not None and len(options.chunks) == len(shape):
        chunks = tuple(min(int(c), s) for c, s in zip(options.chunks, shape, strict=True))
    elif options.chunk_mb is not None:
        probe = ShapeOnly(shape, dataset.dtype, chunk_mb=options.chunk_mb, buffer_shape=shape)
        chunks = tuple(int(c) for c in probe.chunk_shape)
    elif dataset.chunks is not None:
        chunks = tuple(int(c) for c in dataset.chunks)
    else:
        chunks = _default_chunks(shape, dataset.dtype)
    shards: tuple[int, ...] | None = None
    if isinstance(options.shards, int):
        along = min(options.shards, math.ceil(shape[0] / chunks[0])) * chunks[0]
        shards = (along, *(c * math.ceil(s / c) for c, s in zip(chunks[1:], shape[1:], strict=True)))
    elif options.shards is not None and len(options.shards) == len(shape):
        shards = tuple(int(s) for s in options.shards)
        bad = [i for i, (s, c) in enumerate(zip(shards, chunks, strict=True)) if s % c]
        if bad:
            raise ConvertError(f"shard shape {shards} is not a multiple of the chunk shape {chunks} ({dataset.name})")
    return chunks, shards


def stream_codecs(
    options: ConvertOptions, compressors: list | None, filters: list | None
) -> tuple[list | None, list | None]:
    """The (compressors, filters) of a streamed numeric dataset whose source maps to
    ``compressors`` and ``filters``: a preset's codec and no filters, ``options.codec`` with the
    source's filters, or the source's own."""
    if options.layout != KEEP:
        preset = PRESETS[options.layout]
        return make_compressors(preset.codec, preset.level), None
    if options.codec is not None:
        return make_compressors(options.codec, options.level), filters
    return compressors, filters


class ShapeOnly(GenericDataChunkIterator):
    """Only to run hdmf's chunk_mb heuristic on a shape; never read."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, **kwargs: Any) -> None:
        self._shape, self._dtype = shape, dtype
        super().__init__(display_progress=False, **kwargs)

    def _get_data(self, selection):  # pragma: no cover - never read
        raise NotImplementedError

    def _get_maxshape(self):
        return self._shape

    def _get_dtype(self):
        return self._dtype
