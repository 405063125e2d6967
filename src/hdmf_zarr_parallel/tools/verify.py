"""Compare two NWB files, or two Zarr stores, group by group, dataset by dataset, attribute by attribute.

``convert --verify`` and the tests use these to show that a conversion holds exactly what the
input (or stock hdmf-zarr's export) holds. What they ignore, and why, is said where it happens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .zarr_v2 import is_v2_store, open_reader, pickle_decoding, quiet_reader


def compare_nwb_files(a: str | Path, b: str | Path, limit: int = 20, allow_pickle: bool = False) -> list[str]:
    """Read two NWB files (HDF5, Zarr v3 or Zarr v2, by kind) back with hdmf and compare them.

    Both are read as hdmf builders and compared group by group, dataset by dataset
    (values with ``np.array_equal``, dtype for numeric data, whatever its byte order), attribute by attribute
    (values; JSON attributes in Zarr lose numpy scalar types, so only values count),
    link by link and reference by reference (by target path). Returns the differences,
    at most ``limit``; empty when the files hold the same content. ``allow_pickle``: a Zarr v2
    file may decode its pickle-encoded datasets (trusted files only; see :mod:`.zarr_v2`).
    """
    problems: list[str] = []
    with pickle_decoding(allow_pickle), quiet_reader():
        with _open_nwb(a, allow_pickle) as io_a, _open_nwb(b, allow_pickle) as io_b:
            _compare_builders(io_a.read_builder(), io_b.read_builder(), problems, limit)
    return problems


def _open_nwb(path: str | Path, allow_pickle: bool = False):
    from hdmf_zarr.nwb import NWBZarrIO
    from pynwb import NWBHDF5IO

    path = Path(path)
    if is_v2_store(path):
        return open_reader(path, allow_pickle)
    if path.is_dir():
        return NWBZarrIO(str(path), mode="r")
    return NWBHDF5IO(str(path), mode="r")


# Attributes that record how a backend stores data rather than the data (Zarr only).
_STORAGE_ATTRIBUTES = frozenset({"_DTYPE", "_ARRAY_DIMENSIONS", "_REFERENCE_FIELDS", ".specloc", "zarr_link"})


def _compare_builders(a: Any, b: Any, problems: list[str], limit: int, seen: set | None = None) -> None:
    from hdmf.build import DatasetBuilder, GroupBuilder, LinkBuilder

    seen = set() if seen is None else seen
    if len(problems) >= limit or id(a) in seen:
        return
    seen.add(id(a))
    where = a.path
    _compare_attributes(a.attributes, b.attributes, where, problems)
    if isinstance(a, GroupBuilder):
        if not isinstance(b, GroupBuilder):
            problems.append(f"{where}: group in one, {type(b).__name__} in the other")
            return
        for kind in ("groups", "datasets", "links"):
            names_a, names_b = set(getattr(a, kind)), set(getattr(b, kind))
            if names_a != names_b:
                problems.append(
                    f"{where}: {kind} differ: only in first {sorted(names_a - names_b)}, "
                    f"only in second {sorted(names_b - names_a)}"
                )
            for name in sorted(names_a & names_b):
                child_a, child_b = getattr(a, kind)[name], getattr(b, kind)[name]
                if kind == "links":
                    ta, tb = child_a.builder.path, child_b.builder.path
                    if ta != tb:
                        problems.append(f"{child_a.path}: link to {ta} vs {tb}")
                else:
                    _compare_builders(child_a, child_b, problems, limit, seen)
    elif isinstance(a, DatasetBuilder):
        if not isinstance(b, DatasetBuilder):
            problems.append(f"{where}: dataset in one, {type(b).__name__} in the other")
            return
        va, vb = _normalize(_v2_scalar(a)), _normalize(_v2_scalar(b))
        if not _equal(va, vb, strict_dtype=True):
            problems.append(f"{where}: data differ ({_describe(va)} vs {_describe(vb)})")
    elif isinstance(a, LinkBuilder):  # pragma: no cover - links are compared by their parents
        pass


def _v2_scalar(builder: Any) -> Any:
    """A builder's data; a Zarr v2 scalar (dtype "scalar": hdmf-zarr <= 0.13 stored a scalar as a
    one-element array, which its v2 reader hands over as that array) as its one element."""
    data = builder.data
    if isinstance(builder.dtype, str) and builder.dtype == "scalar" and getattr(data, "shape", None) == (1,):
        return data[0]
    return data


def _compare_attributes(a: dict, b: dict, where: str, problems: list[str]) -> None:
    keys_a = {k for k in a if k not in _STORAGE_ATTRIBUTES}
    keys_b = {k for k in b if k not in _STORAGE_ATTRIBUTES}
    if keys_a != keys_b:
        problems.append(f"{where}: attributes differ: {sorted(keys_a ^ keys_b)}")
    for key in sorted(keys_a & keys_b):
        if not _equal(_normalize(a[key]), _normalize(b[key]), strict_dtype=False):
            problems.append(f"{where}: attribute {key!r} differs: {a[key]!r} vs {b[key]!r}")


def _normalize(value: Any) -> Any:
    """Backend-neutral form: references → ("ref", path), strings → str, arrays → numpy."""
    from hdmf.build import Builder, ReferenceBuilder
    from hdmf.query import HDMFDataset

    if isinstance(value, ReferenceBuilder):
        return ("ref", value.builder.path)
    if isinstance(value, Builder):
        return ("ref", value.path)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str | int | float | bool | np.generic) or value is None:
        return value.item() if isinstance(value, np.bytes_ | np.str_) else value
    if isinstance(value, HDMFDataset) or _is_reference_dataset(value):
        return [_normalize(value[i]) for i in range(len(value))]
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # h5py.Dataset, zarr.Array, numpy
        dtype = np.dtype(value.dtype)
        if dtype.names is not None:
            return [
                tuple(_normalize(x) for x in row) for row in np.asarray(value[()] if value.shape == () else value[:])
            ]
        if dtype.kind in "OSUT":
            raw = value[()] if value.shape == () else value[...]
            arr = np.asarray(raw, dtype=object)
            return np.vectorize(lambda x: _normalize(x), otypes=[object])(arr) if arr.size else arr
        return np.asarray(value[()] if value.shape == () else value[...])
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def _is_reference_dataset(value: Any) -> bool:
    return type(value).__name__.startswith(("BuilderH5", "BuilderZarr", "ContainerH5", "ContainerZarr"))


def _equal(a: Any, b: Any, strict_dtype: bool) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.dtype.kind == "O" or b.dtype.kind == "O":
            return a.shape == b.shape and all(_equal(x, y, strict_dtype) for x, y in zip(a.flat, b.flat, strict=True))
        if strict_dtype and _native(a.dtype) != _native(b.dtype):
            return False
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if strict_dtype:
            return False
        try:
            return np.array_equal(np.asarray(a), np.asarray(b))
        except Exception:  # noqa: BLE001 - incomparable shapes/types are simply unequal
            return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y, strict_dtype) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], strict_dtype) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _native(dtype: np.dtype) -> np.dtype:
    """The dtype in this machine's byte order: ``>f8`` (HDF5 keeps the writer's) and ``<f8`` (what
    zarr hands back) hold the same values, and a store need not keep the input's byte order."""
    try:
        return dtype.newbyteorder("=")
    except TypeError:  # new-style dtypes (numpy's StringDType) have no byte order
        return dtype


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    if isinstance(value, list):
        return f"list[{len(value)}]"
    return repr(value)[:60]


def compare_zarr_stores(a: str | Path, b: str | Path, ignore_layout: bool = False, limit: int = 50) -> list[str]:
    """Compare two Zarr stores node by node with zarr-python: the same groups and arrays, each
    array's values (``np.array_equal``), dtype and shape, every attribute exactly, and, unless
    ``ignore_layout``, the rest of the array metadata too (chunks, codecs, fill value).

    Always ignored: the root's consolidated metadata (a cache of the rest; each node's own
    ``zarr.json`` is read). With ``ignore_layout``: ``chunk_grid`` and ``codecs``
    (compression and sharding), which the convert options are allowed to change.
    """
    import zarr

    problems: list[str] = []
    ga = zarr.open_group(str(a), mode="r", use_consolidated=False)
    gb = zarr.open_group(str(b), mode="r", use_consolidated=False)
    layout = {"chunk_grid", "codecs"} if ignore_layout else set()

    def walk(x: Any, y: Any, path: str) -> None:
        if len(problems) >= limit:
            return
        if dict(x.attrs) != dict(y.attrs):
            problems.append(f"{path}: attributes differ: {dict(x.attrs)} vs {dict(y.attrs)}")
        if isinstance(x, zarr.Array):
            if not isinstance(y, zarr.Array):
                problems.append(f"{path}: array vs group")
                return
            if _native(np.dtype(x.dtype)) != _native(np.dtype(y.dtype)) or x.shape != y.shape:
                problems.append(f"{path}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                return
            ma, mb = x.metadata.to_dict(), y.metadata.to_dict()
            for key in sorted(set(ma) | set(mb)):
                if key != "attributes" and key not in layout and ma.get(key) != mb.get(key):
                    problems.append(f"{path}: metadata {key!r} differs: {ma.get(key)} vs {mb.get(key)}")
            va, vb = x[...], y[...]
            if not _equal(np.asarray(va), np.asarray(vb), strict_dtype=True):
                problems.append(f"{path}: values differ")
            return
        if not isinstance(y, zarr.Group):
            problems.append(f"{path}: group vs array")
            return
        ka, kb = set(x.keys()), set(y.keys())
        if ka != kb:
            problems.append(f"{path}: members differ: {sorted(ka ^ kb)}")
        for key in sorted(ka & kb):
            walk(x[key], y[key], f"{path.rstrip('/')}/{key}")

    walk(ga, gb, "/")
    return problems
