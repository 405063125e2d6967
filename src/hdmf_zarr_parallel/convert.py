"""Convert an NWB HDF5 file to NWB Zarr through the parallel (or GPU) engines.

``convert(src, dst)`` is stock ``NWBZarrIO.export(src_io=NWBHDF5IO(src), write_args=
{"link_data": False})`` with one change: every numeric HDF5 dataset of at least
``stream_min_bytes`` is not copied in one piece by hdmf-zarr but streamed through an
:class:`H5DatasetIterator` (a picklable ``GenericDataChunkIterator`` that reopens the
file by path), so the engines read, compress and store its chunks in parallel. Smaller
datasets, strings, references and compound datasets take hdmf-zarr's own path.

The hook is :meth:`_ConvertIO.write_dataset`: hdmf-zarr's export calls it once per
dataset builder, with the builder's data still an ``h5py.Dataset``; it swaps that data
for a ``ZarrDataIO`` around the iterator, with the same settings stock export infers
(``ZarrDataIO.from_h5py_dataset``: HDF5 chunks, fill value, shuffle/gzip mapped to
zarr codecs) unless the options ask for others, and afterwards writes the ``_DTYPE``
attribute exactly as stock's copy does. With default options the output equals
stock export's: the same groups, arrays (values, dtype, shape, chunks, codecs,
fill value), attributes, references and links. ``--codec``/``--level``/``--chunks``/
``--chunk-mb``/``--shards`` change only the storage layout of the streamed arrays
(codec also of the small numeric ones), never their values.

An NWB Zarr v2 store (hdmf-zarr <= 0.13, what neuroconv writes) is read with hdmf-zarr's
``NWBZarrV2IO`` and converted as stock ``NWBZarrV2IO.convert_to_v3`` does, its large numeric
arrays streamed the same way; that lives in :mod:`.zarr_v2`.

The output is written under a hidden temporary name next to ``dst`` and renamed to
``dst`` only after the write (and ``verify``) succeeded, so an interrupted or failed
conversion never leaves a store that looks complete. A lock next to ``dst`` lets one
conversion at a time write it, and ``convert`` deletes nothing it did not create: see
:mod:`.destination`.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hdmf.data_utils import GenericDataChunkIterator

from . import destination, h5direct
from .errors import ConvertError
from .options import DEFAULT_MAX_INFLIGHT_BYTES, ENGINES
from .reopening import ReopensFromState
from .verify import compare_nwb_files

CODECS = ("zstd", "gzip", "lz4", "blosc")
DEFAULT_STREAM_MIN_BYTES = 1 << 20  # numeric datasets from 1 MiB up go through the engines
DEFAULT_BUFFER_BYTES = 64 << 20  # bytes per iterator buffer (whole chunks / shards)


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertOptions:
    """How :func:`convert` writes. ``None`` everywhere means "what stock export does".

    The layout options (``chunks``, ``chunk_mb``, ``shards``) apply to the streamed datasets;
    ``codec``/``level`` to every numeric dataset. ``shards`` is a shard shape (for arrays of
    its rank) or an int ``k``: shards ``k`` chunks long on the first axis, spanning the
    array on the others (see :func:`plan_layout`).
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

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConvertError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.codec is not None and self.codec not in CODECS:
            raise ConvertError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
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


# --------------------------------------------------------------------------------------
# The source iterator
# --------------------------------------------------------------------------------------
class H5DatasetIterator(ReopensFromState, GenericDataChunkIterator):
    """Buffers of one HDF5 dataset; pickles by (file path, dataset name), the copy reopens the file.

    h5py serialises every read with one lock, decompression and copying included, so
    where the layout allows the workers read outside it, many at once (:mod:`.h5direct`:
    a memory map of a contiguous dataset, or raw HDF5 chunks they inflate themselves);
    else through the ``h5py.Dataset``.
    """

    concurrent_reads = True  # h5py locks each call; direct reads share no state

    def __init__(self, path: str, name: str, dataset: Any = None, **kwargs: Any) -> None:
        self.path = str(path)
        self.name = name
        self._file = None
        if dataset is None:
            import h5py

            self._file = h5py.File(self.path, "r")
            dataset = self._file[name]
        self._dataset = dataset
        self._direct = h5direct.direct_reader(dataset)
        kwargs.setdefault("display_progress", False)
        super().__init__(**kwargs)

    @property
    def reading(self) -> str:
        """How the workers read this dataset (for the conversion report)."""
        return self._direct.how if self._direct is not None else "h5py, one read at a time"

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        bounds = self._direct.bounds(selection) if self._direct is not None else None
        return self._direct.read(bounds) if bounds is not None else self._dataset[selection]

    def _get_maxshape(self) -> tuple[int, ...]:
        return tuple(self._dataset.shape)

    def _get_dtype(self) -> np.dtype:
        return self._dataset.dtype

    def _to_dict(self) -> dict:
        return {
            "path": self.path,
            "name": self.name,
            "chunk_shape": tuple(self.chunk_shape),
            "buffer_shape": tuple(self.buffer_shape),
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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


def plan_layout(h5ds: Any, options: ConvertOptions) -> Layout:
    """Chunks: ``options.chunks`` (arrays of its rank), ``options.chunk_mb`` (hdmf's heuristic),
    the HDF5 dataset's own chunks (what stock export keeps), else zarr's default.
    Shards: a shape (arrays of its rank) or ``k`` chunks along axis 0 and whole chunks
    elsewhere. Buffers: whole shards/chunks along axis 0, full extent on the other axes,
    about ``options.buffer_bytes`` each."""
    shape = tuple(int(s) for s in h5ds.shape)
    itemsize = h5ds.dtype.itemsize
    if options.chunks is not None and len(options.chunks) == len(shape):
        chunks = tuple(min(int(c), s) for c, s in zip(options.chunks, shape, strict=True))
    elif options.chunk_mb is not None:
        probe = _ShapeOnly(shape, h5ds.dtype, chunk_mb=options.chunk_mb, buffer_shape=shape)
        chunks = tuple(int(c) for c in probe.chunk_shape)
    elif h5ds.chunks is not None:
        chunks = tuple(int(c) for c in h5ds.chunks)
    else:
        chunks = _default_chunks(shape, h5ds.dtype)
    shards: tuple[int, ...] | None = None
    if isinstance(options.shards, int):
        along = min(options.shards, math.ceil(shape[0] / chunks[0])) * chunks[0]
        shards = (along, *(c * math.ceil(s / c) for c, s in zip(chunks[1:], shape[1:], strict=True)))
    elif options.shards is not None and len(options.shards) == len(shape):
        shards = tuple(int(s) for s in options.shards)
        bad = [i for i, (s, c) in enumerate(zip(shards, chunks, strict=True)) if s % c]
        if bad:
            raise ConvertError(f"shard shape {shards} is not a multiple of the chunk shape {chunks} ({h5ds.name})")
    unit = shards or chunks
    row = max(1, math.prod(shape[1:]) * itemsize)
    k = max(1, options.buffer_bytes // (unit[0] * row))
    buffer_shape = (min(shape[0], k * unit[0]), *shape[1:])
    return Layout(chunks=chunks, shards=shards, buffer_shape=buffer_shape)


class _ShapeOnly(GenericDataChunkIterator):
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


def _is_streamable(h5ds: Any, options: ConvertOptions) -> bool:
    dtype = h5ds.dtype
    return (
        dtype.names is None
        and dtype.kind in "biuf"
        and h5ds.ndim >= 1
        and all(s > 0 for s in h5ds.shape)
        and h5ds.size * dtype.itemsize >= options.stream_min_bytes
    )


def _stock_type_name(dtype: np.dtype) -> str:
    """The ``_DTYPE`` attribute stock hdmf-zarr writes for a copied numeric array."""
    return np.dtype(dtype).type.__name__


# --------------------------------------------------------------------------------------
# The IO: export, with large HDF5 datasets streamed through the engines
# --------------------------------------------------------------------------------------
def _convert_io_class():
    from hdmf_zarr.utils import ZarrDataIO
    from zarr.abc.codec import ArrayArrayCodec, BytesBytesCodec

    from . import zarr_v2
    from .io import NWBParallelZarrIO

    class _ConvertIO(NWBParallelZarrIO):
        """NWBParallelZarrIO whose export streams large numeric HDF5 datasets (see the module doc)."""

        def __init__(self, *args: Any, convert_options: ConvertOptions, source_path: str, **kwargs: Any) -> None:
            self.convert_options = convert_options
            self.source_path = source_path
            self.streamed: list[tuple[str, int]] = []  # (name, bytes)
            self.reading: dict[str, str] = {}  # name -> how the workers read it
            self.copied = 0
            self._iterators: list[H5DatasetIterator] = []
            super().__init__(*args, **kwargs)

        def write_dataset(self, **kwargs: Any):
            builder = kwargs.get("builder")
            data = kwargs.get("force_data")
            data = builder.data if data is None else data
            if zarr_v2.is_v2_array(data):  # a Zarr v2 input (see zarr_v2.py)
                return zarr_v2.write_v2_dataset(self, kwargs, super().write_dataset)
            if not ZarrDataIO.is_h5py_dataset(data):
                return super().write_dataset(**kwargs)
            options = self.convert_options
            codecs = ZarrDataIO.hdf5_to_zarr_filters(data)
            compressors = [c for c in codecs if isinstance(c, BytesBytesCodec)] or None
            filters = [c for c in codecs if isinstance(c, ArrayArrayCodec)] or None
            if options.codec is not None and data.dtype.kind in "biuf":
                compressors = make_compressors(options.codec, options.level)
            fillvalue = data.fillvalue
            if isinstance(fillvalue, bytes):
                fillvalue = fillvalue.decode("utf-8")
            if not _is_streamable(data, options) or not self._same_dtype(builder, data):
                self.copied += 1
                kwargs["force_data"] = ZarrDataIO(
                    data=data, compressors=compressors, filters=filters, fillvalue=fillvalue, chunks=data.chunks
                )
                return super().write_dataset(**kwargs)
            layout = plan_layout(data, options)
            iterator = H5DatasetIterator(
                self.source_path,
                data.name,
                dataset=data,
                chunk_shape=tuple(min(c, s) for c, s in zip(layout.chunks, data.shape, strict=True)),
                buffer_shape=layout.buffer_shape,
            )
            self._iterators.append(iterator)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "shards without chunks": we always give both
                kwargs["force_data"] = ZarrDataIO(
                    data=iterator,
                    chunks=layout.chunks,
                    shards=layout.shards,
                    compressors=compressors,
                    filters=filters,
                    fillvalue=fillvalue,
                )
            dset = super().write_dataset(**kwargs)
            if dset is not None:
                dset.attrs["_DTYPE"] = _stock_type_name(data.dtype)
            self.streamed.append((data.name, int(data.size * data.dtype.itemsize)))
            self.reading[data.name] = iterator.reading
            return dset

        @staticmethod
        def _same_dtype(builder: Any, data: Any) -> bool:
            """Stream only where stock would store the HDF5 dtype unchanged."""
            wanted = builder.dtype
            if wanted is None:
                return True
            try:
                return np.dtype(wanted) == data.dtype
            except TypeError:
                return False

        def close_iterators(self) -> None:
            for iterator in self._iterators:
                iterator.close()
            self._iterators.clear()

    return _ConvertIO


# --------------------------------------------------------------------------------------
# Checks of the inputs
# --------------------------------------------------------------------------------------
def check_source(src: str | Path) -> Path:
    """An existing, readable NWB HDF5 file or NWB Zarr v2 store, or :class:`ConvertError` saying what is wrong."""
    import h5py

    path = Path(src)
    if not path.exists():
        raise ConvertError(f"input not found: {path}")
    if path.is_dir():  # an NWB Zarr v2 store, or a clear error (zarr_v2.py)
        from . import zarr_v2

        return zarr_v2.check_source(path)
    if not os.access(path, os.R_OK):
        raise ConvertError(f"input {path} is not readable (permission denied)")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise ConvertError(f"cannot read input {path}: {exc}") from None
    if not is_hdf5:
        raise ConvertError(f"input {path} is not an HDF5 file; convert reads NWB HDF5 files (.nwb)")
    try:
        with h5py.File(str(path), "r") as f:
            version = f.attrs.get("nwb_version")
    except OSError as exc:
        raise ConvertError(f"cannot open input {path} as HDF5: {exc}") from None
    if version is None:
        raise ConvertError(f"input {path} is an HDF5 file but not an NWB file (no nwb_version attribute)")
    return path


def check_destination(dst: str | Path, overwrite: bool, src: Path | None = None) -> Path:
    """A path ``convert`` may write, or :class:`ConvertError`: its folder exists, and nothing is
    there, or (with ``overwrite``) a Zarr store or an empty folder, never a file, a link or a
    folder of other files."""
    path = Path(dst)
    if path.name in ("", ".", ".."):
        raise ConvertError(f"output {dst} does not name a store; give one such as session.nwb.zarr")
    if src is not None and path.resolve() == src.resolve():
        raise ConvertError("output and input are the same path")
    if os.path.lexists(path) and not overwrite:
        raise ConvertError(f"output {path} exists; pass --overwrite to replace it")
    refusal = destination.refuse_to_replace(path)
    if refusal is not None:
        raise ConvertError(refusal)
    if not path.parent.is_dir():
        raise ConvertError(f"output folder {path.parent} does not exist")
    return path


# --------------------------------------------------------------------------------------
# Convert
# --------------------------------------------------------------------------------------
@dataclass
class ConvertReport:
    source: Path
    output: Path
    engine: str
    seconds: float
    streamed: list[tuple[str, int]] = field(default_factory=list)
    reading: dict[str, str] = field(default_factory=dict)  # streamed dataset -> how it was read
    copied: int = 0
    source_bytes: int = 0
    stored_bytes: int = 0
    verified: bool | None = None
    verify_seconds: float | None = None

    @property
    def streamed_bytes(self) -> int:
        return sum(n for _, n in self.streamed)

    def summary(self) -> str:
        mbps = self.streamed_bytes / self.seconds / 1e6 if self.seconds else 0.0
        lines = [
            f"converted {self.source} -> {self.output} in {self.seconds:.2f} s with engine {self.engine}",
            f"  {len(self.streamed)} dataset(s) streamed through the engine "
            f"({self.streamed_bytes / 1e6:.1f} MB, {mbps:.1f} MB/s overall), {self.copied} small one(s) copied",
            f"  input {self.source_bytes / 1e6:.1f} MB, output {self.stored_bytes / 1e6:.1f} MB",
        ]
        if self.reading:
            ways = collections.Counter(self.reading.values())
            lines.append("  read by: " + ", ".join(f"{how} ({n})" for how, n in sorted(ways.items())))
        if self.verified is not None:
            lines.append(
                f"  verify: every group, dataset, attribute, reference and link matches the input "
                f"({self.verify_seconds:.2f} s)"
            )
        return "\n".join(lines)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def _open_source(src_path: Path, options: ConvertOptions):
    """The source IO and any other ``export`` arguments: ``NWBHDF5IO``, or for a Zarr v2 store
    ``NWBZarrV2IO`` and the ``NWBFile`` it read (:func:`.zarr_v2.open_source`)."""
    if src_path.is_dir():
        from . import zarr_v2

        with zarr_v2.open_source(src_path, options) as opened:
            yield opened
        return
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(src_path), mode="r") as src_io:
        yield src_io, {}


def convert(
    src: str | Path,
    dst: str | Path,
    options: ConvertOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> ConvertReport:
    """Convert the NWB HDF5 file (or NWB Zarr v2 store) ``src`` to the NWB Zarr store ``dst``; see the module doc."""
    options = options or ConvertOptions()
    src_path = check_source(src)
    dst_path = check_destination(dst, options.overwrite, src_path)
    say = log or (lambda text: None)
    with destination.OutputLock(dst_path) as lock:  # a second convert to dst fails here
        destination.clean_leftovers(dst_path, say, locked=lock.held)
        dst_path = check_destination(dst, options.overwrite, src_path)  # again: what is there now is what counts
        existed = os.path.lexists(dst_path)
        temporary = destination.partial_path(dst_path)
        with destination.cleanup_on_failure(temporary, say):
            result = _write(src_path, dst_path, temporary, options, say)
            destination.place(temporary, dst_path, options.overwrite, existed)
        return result


def _write(src_path: Path, dst_path: Path, temporary: Path, options: ConvertOptions, say) -> ConvertReport:
    """Export ``src_path`` into ``temporary`` (and verify it); returns the report."""
    convert_io = _convert_io_class()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        with _open_source(src_path, options) as (src_io, export_args):
            out = convert_io(
                str(temporary),
                mode="w",
                engine=options.engine,
                max_workers=options.workers,
                max_inflight_bytes=options.max_inflight_bytes,
                progress=options.progress,
                **({"client": options.client} if options.client is not None else {}),
                convert_options=options,
                source_path=str(src_path),
            )
            try:
                out.export(src_io=src_io, write_args={"link_data": False}, **export_args)
            finally:
                out.close_iterators()
                out.close()
    seconds = time.perf_counter() - start
    report = out.last_write_report
    result = ConvertReport(
        source=src_path,
        output=dst_path,
        engine=report.engine if report is not None else options.engine,
        seconds=seconds,
        streamed=list(out.streamed),
        reading=dict(out.reading),
        copied=out.copied,
        source_bytes=_dir_bytes(src_path) if src_path.is_dir() else src_path.stat().st_size,
        stored_bytes=_dir_bytes(temporary),
    )
    if options.verify:
        say("verifying: reading both files back and comparing every dataset ...")
        t0 = time.perf_counter()
        problems = compare_nwb_files(src_path, temporary, allow_pickle=options.allow_pickle)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConvertError(f"verification failed: {problems[0]}{more}")
        result.verified, result.verify_seconds = True, time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------
# Comparisons: HDF5 input vs Zarr output (``--verify``), and Zarr vs Zarr (tests)
# --------------------------------------------------------------------------------------
