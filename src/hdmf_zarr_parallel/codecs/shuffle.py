"""numcodecs' byte shuffle on whole chunk rows, with array operations (numpy or cupy).

``numcodecs.Shuffle(elementsize=e)`` writes byte ``j`` of every element before byte
``j + 1`` of any: for a chunk of ``n`` elements, output byte ``j * n + i`` is input byte
``i * e + j``. On a ``(chunks, n * e)`` byte matrix that is one reshape, one transpose and
one copy, on the device as on the host.
"""

from __future__ import annotations

from typing import Any

__all__ = ["shuffle_rows"]


def shuffle_rows(xp: Any, rows: Any, elementsize: int) -> Any:
    """Byte-shuffle every row of a C-contiguous 2-D array; returns a ``(chunks, bytes)`` uint8 array."""
    count = rows.shape[0]
    data = rows.reshape(count, -1).view(xp.uint8)
    nbytes = data.shape[1]
    if elementsize <= 1:
        return xp.ascontiguousarray(data)  # numcodecs leaves the bytes as they are
    if nbytes % elementsize:
        raise ValueError(f"a chunk of {nbytes} bytes is not a whole number of {elementsize}-byte elements")
    elements = nbytes // elementsize
    return xp.ascontiguousarray(data.reshape(count, elements, elementsize).transpose(0, 2, 1)).reshape(count, nbytes)
