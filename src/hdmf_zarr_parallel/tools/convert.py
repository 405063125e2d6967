"""Convert an NWB HDF5 file (or an NWB Zarr v2 store) to NWB Zarr through the parallel (or GPU) engines.

``convert(src, dst)`` is stock ``NWBZarrIO.export(src_io=NWBHDF5IO(src), write_args=
{"link_data": False})`` with one change: every numeric HDF5 dataset of at least
``stream_min_bytes`` is not copied in one piece by hdmf-zarr but streamed through an
:class:`~.h5direct.H5DatasetIterator` (a picklable ``GenericDataChunkIterator`` that reopens the
file by path), so the engines read, compress and store its chunks in parallel. Smaller
datasets, strings, references and compound datasets take hdmf-zarr's own path. The export IO
that does this is :class:`~.convert_io.ConvertIO`; the options and the layout of each streamed
dataset are planned in :mod:`.convert_plan`.

With default options the output equals stock export's: the same groups, arrays (values, dtype,
shape, chunks, codecs, fill value), attributes, references and links. ``--codec``/``--level``/
``--chunks``/``--chunk-mb``/``--shards`` change only the storage layout of the streamed arrays
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

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ..errors import ConvertError
from . import destination, zarr_v2
from .convert_io import ConvertIO
from .convert_plan import CODECS, DEFAULT_STREAM_MIN_BYTES, ConvertOptions, make_compressors, plan_layout
from .convert_report import ConvertReport, disk_bytes
from .verify import compare_nwb_files

__all__ = [
    "CODECS",
    "DEFAULT_STREAM_MIN_BYTES",
    "ConvertError",
    "ConvertOptions",
    "ConvertReport",
    "check_destination",
    "check_source",
    "convert",
    "make_compressors",
    "plan_layout",
]


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
@contextlib.contextmanager
def _open_source(src_path: Path, options: ConvertOptions):
    """The source IO and any other ``export`` arguments: ``NWBHDF5IO``, or for a Zarr v2 store
    ``NWBZarrV2IO`` and the ``NWBFile`` it read (:func:`.zarr_v2.open_source`)."""
    if src_path.is_dir():
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
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        with _open_source(src_path, options) as (src_io, export_args):
            out = ConvertIO(
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
        source_bytes=disk_bytes(src_path),
        stored_bytes=disk_bytes(temporary),
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
