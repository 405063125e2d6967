"""NWB Zarr **v2** stores as ``convert``'s input: detection, opening, and the streamed datasets.

Every NWB Zarr file neuroconv writes today is Zarr v2 (hdmf-zarr ≤ 0.13, zarr 2). hdmf-zarr
0.14 reads those only through ``NWBZarrV2IO`` (read-only), and its documented route to v3 is
``NWBZarrV2IO.convert_to_v3(src, dst)`` = ``export_to_v3``: read the ``NWBFile``, refuse a file
with entries it could not read (``skipped_entries``), then ``NWBZarrIO(dst, "w").export(
nwbfile=..., src_io=v2_io, write_args={"link_data": False})``. There every v2 array is copied
serially by ``ZarrIO._copy_array``: the source chunks, its numcodecs compressor and filters
mapped to zarr v3 (``ZarrIO._to_v3_codecs``), its fill value, and all of its ``.zattrs``
(``zarr_dtype`` included, and no ``_DTYPE``), followed by the builder's attributes.

:func:`open_source` follows the same route; :func:`write_v2_dataset` (called by
:class:`.convert_io.ConvertIO` for each dataset builder) swaps each large numeric v2 array for a
:class:`ZarrV2DatasetIterator`
— a picklable ``GenericDataChunkIterator`` that reopens the store by path — with the settings
``_copy_array`` would use, so the engines read, decode, encode and store its chunks in
parallel, and afterwards leaves the attributes as ``_copy_array`` leaves them. The output equals
stock's conversion array for array and attribute for attribute (``tests/test_convert_v2.py``).

Pickle: hdmf-zarr ≤ 0.13 stored object columns (the electrodes table's ``group`` references)
with the pickle codec, so most v2 NWB files need ``allow_pickle=True`` — only for trusted
files, as stock says. With numcodecs ≥ 0.17 hdmf-zarr's ``allow_pickle`` alone is not enough
(numcodecs refuses ``Pickle.decode`` unless ``numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE`` is
set); :func:`pickle_decoding` sets that flag while the trusted file is read, and restores it.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvertError
from .convert_plan import ConvertOptions, is_streamable, plan_layout, stream_codecs
from .reopening import NamedDatasetIterator

READING = "zarr, v2 chunks"  # how the workers read a streamed v2 array (for the conversion report)

# Warnings the v2 reader gives for every hdmf-zarr 0.13 file: it reads what zarr 3 cannot parse
# (object arrays, the cached specs) by decoding the raw chunks. Expected, so not shown.
_EXPECTED_WARNINGS = (
    r"Read '.*' via zarr v2 store fallback",
    r"Could not read spec dataset '.*' via zarr API",
    r"Could not map codec 'vlen-utf8' to a zarr v3 codec",  # string arrays: zarr 3 picks the codec
)


# --------------------------------------------------------------------------------------
# Detection and checks
# --------------------------------------------------------------------------------------
def is_v2_store(path: str | Path) -> bool:
    """A local directory holding Zarr v2 metadata at its root (``.zgroup`` or ``.zattrs``)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (".zgroup", ".zattrs"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from None


def check_source(path: Path) -> Path:
    """An NWB Zarr v2 store convert can read, or :class:`ConvertError` saying what ``path`` is instead."""
    if (path / "zarr.json").exists():
        raise ConvertError(
            f"input {path} is a Zarr v3 store; convert reads NWB HDF5 files (.nwb) and NWB Zarr v2 stores"
        )
    if (path / ".zarray").exists():
        raise ConvertError(f"input {path} is a Zarr v2 array, not an NWB file (an NWB file's root is a group)")
    if not is_v2_store(path):
        raise ConvertError(
            f"input {path} is a folder, not a Zarr store; convert reads NWB HDF5 files (.nwb) and NWB Zarr v2 stores"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConvertError(f"input {path} is not readable (permission denied)")
    if not (path / ".zgroup").is_file():
        raise ConvertError(f"input {path} has Zarr v2 attributes but no .zgroup: not a complete Zarr v2 store")
    zgroup = _read_json(path / ".zgroup")
    if not isinstance(zgroup, dict) or zgroup.get("zarr_format") != 2:
        raise ConvertError(f"input {path}/.zgroup does not declare zarr_format 2: {zgroup!r:.80}")
    attrs = _read_json(path / ".zattrs") if (path / ".zattrs").is_file() else {}
    if not isinstance(attrs, dict) or "nwb_version" not in attrs:
        raise ConvertError(f"input {path} is a Zarr v2 store but not an NWB file (no nwb_version attribute)")
    return path


# --------------------------------------------------------------------------------------
# Opening: stock's export_to_v3 route
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def pickle_decoding(allow: bool) -> Iterator[None]:
    """numcodecs may decode pickle while inside (``allow=True``; trusted files only); restored after."""
    if not allow:
        yield
        return
    import numcodecs.pickles

    before = getattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", None)
    numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = True
    try:
        yield
    finally:
        if before is None:
            del numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE
        else:
            numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = before


@contextlib.contextmanager
def quiet_reader() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def open_reader(path: str | Path, allow_pickle: bool = False):
    """``NWBZarrV2IO(path, mode="r", allow_pickle=...)`` (call inside :func:`pickle_decoding`)."""
    from hdmf_zarr import NWBZarrV2IO

    return NWBZarrV2IO(str(path), mode="r", allow_pickle=allow_pickle)


@contextlib.contextmanager
def open_source(path: Path, options: ConvertOptions) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The v2 reader and what ``export`` needs besides it (the ``NWBFile``, read as stock reads it).

    Everything that can be wrong with the file's structure is found here, before the output
    exists: a pickle codec without ``allow_pickle``, an entry neither zarr 3 nor the v2
    fallback can read (stock's ``IncompleteConversionError``), a file PyNWB cannot construct.
    """
    from hdmf_zarr.backend_zarrv2 import UnsafePickleCodecError

    with pickle_decoding(options.allow_pickle), quiet_reader():
        io = None
        try:
            io = open_reader(path, options.allow_pickle)
            nwbfile = io.read()
        except UnsafePickleCodecError as exc:
            _close(io)
            raise ConvertError(_pickle_message(path, exc)) from exc
        except Exception as exc:
            skipped = io.skipped_entries if io is not None else []
            _close(io)
            if skipped:
                raise ConvertError(_skipped_message(path, skipped)) from exc
            raise ConvertError(f"cannot read {path} as an NWB Zarr v2 file: {exc}") from exc
        try:
            if io.skipped_entries:
                raise ConvertError(_skipped_message(path, io.skipped_entries))
            nwbfile.set_modified()  # as export_to_v3 does
            yield io, {"nwbfile": nwbfile}
        finally:
            _close(io)


def _close(io: Any) -> None:
    if io is not None:
        with contextlib.suppress(Exception):
            io.close()


def _pickle_message(path: Path, exc: BaseException) -> str:
    where = str(exc).split(" in a Zarr v2 file")[0].replace("Refusing to decode the unsafe pickle codec", "").strip()
    return (
        f"input {path} holds pickle-encoded data{(' ' + where) if where else ''} (hdmf-zarr <= 0.13 stores "
        "object columns such as electrodes/group that way); decoding pickle can run arbitrary code, so pass "
        "--allow-pickle (allow_pickle=True) only if you trust this file"
    )


def _skipped_message(path: Path, skipped: list[tuple[str, str]]) -> str:
    entry, reason = skipped[0]
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return f"{len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {path} cannot be read: {entry}: {reason}{more}"


# --------------------------------------------------------------------------------------
# The source iterator
# --------------------------------------------------------------------------------------
def open_array(path: str | Path, name: str) -> Any:
    """The v2 array ``name`` (an absolute path inside the store) of the store at ``path``, read-only."""
    import zarr
    from zarr.storage import LocalStore

    return zarr.open_array(store=LocalStore(str(path), read_only=True), path=name.strip("/"), mode="r", zarr_format=2)


class ZarrV2DatasetIterator(NamedDatasetIterator):
    """Buffers of one Zarr v2 array; pickles by (store path, array name), the copy reopens the store.

    Reads go through zarr-python 3, which decodes each chunk with the array's numcodecs codecs;
    zarr reads are thread-safe, so the workers read concurrently. A zarr array holds no open file.
    """

    concurrent_reads = True
    reading = READING

    def _open(self) -> Any:
        return open_array(self.path, self.name)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self._dataset[selection])


# --------------------------------------------------------------------------------------
# The export hook
# --------------------------------------------------------------------------------------
def is_v2_array(data: Any) -> bool:
    """A zarr array read from a Zarr v2 store (what the v2 reader's builders hold for numeric data)."""
    import zarr

    return isinstance(data, zarr.Array) and getattr(data.metadata, "zarr_format", None) == 2


def _streamable(array: Any, options: ConvertOptions) -> bool:
    dtype = np.dtype(array.dtype)
    if not dtype.isnative or dtype.kind not in "biuf" or dtype.names is not None:
        return False
    if options.codec is not None:  # stock's copy keeps the source codecs: the new codec needs our path
        return array.ndim >= 1 and all(s > 0 for s in array.shape)
    return is_streamable(array, options)


def write_v2_dataset(io: Any, kwargs: dict[str, Any], write: Callable[..., Any]) -> Any:
    """Write the dataset builder ``kwargs["builder"]`` whose data is the v2 array ``data``: large
    numeric arrays through a :class:`ZarrV2DatasetIterator` with ``_copy_array``'s settings, the
    rest by ``write`` (hdmf-zarr's own ``write_dataset``, which copies them)."""
    from hdmf_zarr import ZarrIO
    from hdmf_zarr.utils import ZarrDataIO

    builder = kwargs["builder"]
    data = kwargs.get("force_data")
    data = builder.data if data is None else data
    options: ConvertOptions = io.convert_options
    if io.get_written(builder):
        return write(**kwargs)
    if not _streamable(data, options):
        io.copied += 1
        return write(**kwargs)
    layout = plan_layout(data, options)
    iterator = io.open_iterator(ZarrV2DatasetIterator, data, layout)
    compressors = ZarrIO._to_v3_codecs(data.compressors) if data.compressors else None
    filters = ZarrIO._to_v3_codecs(data.filters) if data.filters else None
    compressors, filters = stream_codecs(options, compressors, filters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "shards without chunks": we always give both
        wrapped = ZarrDataIO(
            data=iterator,
            chunks=layout.chunks,
            shards=layout.shards,
            compressors=compressors or None,
            filters=filters or None,
            fillvalue=data.fill_value,
        )
    wrapped.io_settings["dtype"] = np.dtype(data.dtype)  # _copy_array keeps the source dtype, whatever zarr_dtype says
    source_attributes = dict(data.attrs)
    dset = write(**{**kwargs, "force_data": wrapped})
    if dset is not None:
        # _copy_array writes no _DTYPE and copies every source attribute (zarr_dtype too)
        if "_DTYPE" in dset.attrs and "_DTYPE" not in source_attributes:
            del dset.attrs["_DTYPE"]
        missing = {k: v for k, v in source_attributes.items() if k not in dset.attrs}
        if missing:
            dset.update_attributes(missing)
    io.record_streamed(data, iterator)
    return dset
