"""Array operations on chunk rows, the same code on the device (cupy) and on the host (numpy).

A GPU lane works on one matrix per task, a CPU worker on one per block of a task's units: one
row per chunk, in the order the units and the shard index use (:func:`chunk_matrix`). The all-fill check (:func:`fill_rows`) and
numcodecs' byte shuffle (:func:`shuffle_rows`) are single array operations over it, so a
batch costs no Python work per chunk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["chunk_matrix", "fill_rows", "shuffle_rows"]


def chunk_matrix(xp, tile, units: tuple[int, ...], inner: tuple[int, ...], chunk: tuple[int, ...], fill_value):
    """All chunks of a unit-aligned tile as one C-contiguous ``(units, chunks per unit, chunk size)`` array.

    The tile is padded with the fill value to whole units (zarr pads edge chunks the same
    way), then one reshape/transpose copy orders the chunks unit by unit in C order of the
    unit coordinates and, inside a shard, in C order of the inner-chunk coordinates: the
    order ``UnitGrid.units_overlapping`` and the shard index use. An unsharded array is
    the case of one chunk per unit (``inner`` all ones).
    """
    full = tuple(n * k * c for n, k, c in zip(units, inner, chunk, strict=True))
    if tuple(tile.shape) != full:
        padded = xp.full(full, fill_value if fill_value is not None else 0, dtype=tile.dtype)
        padded[tuple(slice(0, s) for s in tile.shape)] = tile
        tile = padded
    ndim = len(full)
    split = tile.reshape(tuple(x for nkc in zip(units, inner, chunk, strict=True) for x in nkc))
    order = [3 * i for i in range(ndim)] + [3 * i + 1 for i in range(ndim)] + [3 * i + 2 for i in range(ndim)]
    ordered = xp.ascontiguousarray(split.transpose(order))
    return ordered.reshape(math.prod(units), math.prod(inner), math.prod(chunk))


def fill_rows(xp, rows, fill_value) -> np.ndarray:
    """Which rows (chunks) hold only the fill value, as zarr decides it: NaN equals a NaN fill,
    otherwise the bit patterns must match (so -0.0 is not a 0.0 fill). One reduction, one copy back."""
    dtype = np.dtype(rows.dtype)
    if fill_value is None:
        fill_value = 0
    if dtype.kind in "fc" and np.isnan(fill_value):
        flags = xp.isnan(rows).all(axis=1)
    else:
        bits = np.dtype(f"u{dtype.itemsize}") if dtype.itemsize in (1, 2, 4, 8) else None
        if bits is None:  # complex and other wide types: compare values
            flags = (rows == dtype.type(fill_value)).all(axis=1)
        else:
            target = np.array(fill_value, dtype=dtype).view(bits)
            flags = (rows.view(bits) == bits.type(target)).all(axis=1)
    return np.asarray(flags.get() if hasattr(flags, "get") else flags, dtype=bool)


def shuffle_rows(xp: Any, rows: Any, elementsize: int) -> Any:
    """Byte-shuffle every row of a C-contiguous 2-D array; returns a ``(chunks, bytes)`` uint8 array.

    ``numcodecs.Shuffle(elementsize=e)`` writes byte ``j`` of every element before byte
    ``j + 1`` of any: for a chunk of ``n`` elements, output byte ``j * n + i`` is input byte
    ``i * e + j``. On a ``(chunks, n * e)`` byte matrix that is one reshape, one transpose
    and one copy.
    """
    count = rows.shape[0]
    data = rows.reshape(count, -1).view(xp.uint8)
    nbytes = data.shape[1]
    if elementsize <= 1:
        return xp.ascontiguousarray(data)  # numcodecs leaves the bytes as they are
    if nbytes % elementsize:
        raise ValueError(f"a chunk of {nbytes} bytes is not a whole number of {elementsize}-byte elements")
    elements = nbytes // elementsize
    return xp.ascontiguousarray(data.reshape(count, elements, elementsize).transpose(0, 2, 1)).reshape(count, nbytes)
