"""Checks of a whole builder tree before hdmf-zarr writes any of it.

The pipeline refuses a dataset whose write unit (chunk, or shard) cannot fit into
``max_inflight_bytes`` (``pipeline.validate``), but it meets each dataset only once
hdmf-zarr has created its array, after the file's groups and attributes. Where the unit is
already known from the builders (``ZarrDataIO(chunks=..., shards=...)``, or the iterator's
``recommended_chunk_shape()``, as hdmf-zarr itself chooses), :func:`check_memory_bound`
refuses it before anything is written. Units left to zarr's own default chunking are checked
later, by the pipeline, as before.

The estimate is a lower bound (the data of one unit, without the mask a sequential iterator's
unit is staged with), so it never refuses what the pipeline would accept.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np
from hdmf.build import DatasetBuilder, GroupBuilder
from hdmf.data_utils import AbstractDataChunkIterator
from hdmf_zarr.utils import ZarrDataIO


def check_memory_bound(root: GroupBuilder, max_inflight_bytes: int) -> None:
    """Raise ``ValueError`` for the first iterator dataset whose chunk or shard, as hdmf-zarr will
    create it, holds more bytes than ``max_inflight_bytes``."""
    for name, builder in _datasets(root, ""):
        data, io_settings = builder.data, {}
        if isinstance(data, ZarrDataIO):
            data, io_settings = data.data, data.io_settings or {}
        if not isinstance(data, AbstractDataChunkIterator):
            continue
        shards = _shape(io_settings.get("shards"))
        unit = shards or _shape(io_settings.get("chunks") or data.recommended_chunk_shape())
        itemsize = _itemsize(io_settings.get("dtype"), builder.dtype, getattr(data, "dtype", None))
        if unit is None or itemsize is None:
            continue  # zarr's default chunking, or not a numeric dataset: the pipeline checks it
        needed = math.prod(unit) * itemsize
        if needed > max_inflight_bytes:
            raise ValueError(
                f"dataset '{name}': one {'shard' if shards else 'chunk'} of shape {unit} needs at least "
                f"{needed} bytes in flight, more than max_inflight_bytes={max_inflight_bytes}; raise the "
                "limit or use smaller chunks (refused before anything was written)"
            )


def _datasets(group: GroupBuilder, prefix: str) -> Iterator[tuple[str, DatasetBuilder]]:
    for name, dataset in group.datasets.items():
        yield prefix + name, dataset
    for name, child in group.groups.items():
        yield from _datasets(child, f"{prefix}{name}/")


def _shape(value: object) -> tuple[int, ...] | None:
    """A chunk or shard shape given as a sequence of positive integers, else ``None``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    shape = tuple(value)
    if not shape or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        return None
    return tuple(int(n) for n in shape)


# hdmf's spec dtype names without a width, as hdmf-zarr maps them (numpy reads "float" and "int" wider)
_SPEC_ITEMSIZES = {"float": 4, "double": 8, "long": 8, "int": 4, "short": 2, "uint": 4, "bool": 1, "bool_": 1}


def _itemsize(*candidates: object) -> int | None:
    """The item size of the dataset's array: hdmf-zarr takes the first dtype given (its
    ``ZarrDataIO`` dtype, the builder's, the iterator's); ``None`` unless that one is numeric."""
    dtype = next((c for c in candidates if c is not None), None)
    if isinstance(dtype, str) and dtype in _SPEC_ITEMSIZES:
        return _SPEC_ITEMSIZES[dtype]
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        return None
    return resolved.itemsize if dtype is not None and resolved.kind in "biufcmM" else None
