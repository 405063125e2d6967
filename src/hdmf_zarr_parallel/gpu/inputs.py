"""The uncompressed side of one batched encode: what an algorithm's framing may read back.

Most framing needs nothing but nvCOMP's output. Some needs uncompressed bytes for a few
chunks or streams: gzip's fallback (the CRC of a chunk), Blosc's streams that compression
did not shrink (stored as they are) and its memcpyed chunks. :class:`BatchInput` fetches
those on demand, with one gather and one copy to the host per call, so nothing is copied
back for the chunks that do not need it. The same code runs on device arrays (cupy) and on
host arrays (numpy, in the host lane).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BatchInput", "once", "to_host"]


def to_host(a: Any) -> np.ndarray:
    """A numpy array of ``a`` (a copy from the device for cupy arrays)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def once(make: Any) -> Any:
    """``make`` as a function that computes its value on its first call only (rows gathered lazily)."""
    cache: list = []

    def value() -> Any:
        if not cache:
            cache.append(make())
        return cache[0]

    return value


class BatchInput:
    """The compression input of a batch: chunk ``k`` is row ``rows[k]`` of ``matrix`` (uint8, 2-D),
    its streams the ``(offsets, sizes)`` pieces of that row; ``original`` holds each chunk's bytes
    before any algorithm transform (``None``: the input rows are the chunks' bytes)."""

    def __init__(
        self,
        xp: Any,
        matrix: Any,
        rows: Sequence[int],
        nbytes: int,
        offsets: np.ndarray,
        sizes: np.ndarray,
        original: Any = None,
    ) -> None:
        self.xp = xp
        self.matrix = matrix
        self.rows = np.asarray(rows, dtype=np.int64)
        self.nbytes = int(nbytes)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.original = original

    def chunk(self, k: int) -> bytes:
        """The uncompressed bytes of the ``k``-th chunk of the batch (before any transform)."""
        if self.original is not None:
            return to_host(self.original[k]).tobytes()
        return to_host(self.matrix[int(self.rows[k]), : self.nbytes]).tobytes()

    def __call__(self, k: int) -> bytes:  # the ``source(i)`` of framing written before streams
        return self.chunk(k)

    def streams(self, ids: Sequence[int]) -> list[memoryview]:
        """The compression input of the given streams (``k * streams per chunk + s``), in that order:
        gathered into one buffer, copied to the host once."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return []
        chunks, positions = np.divmod(ids, len(self.sizes))
        order = np.argsort(positions, kind="stable")  # grouped by stream position
        lengths = self.sizes[positions[order]]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        gathered = self.xp.empty(int(ends[-1]), dtype=self.xp.uint8)
        bounds = np.flatnonzero(np.diff(positions[order])) + 1
        for group in np.split(np.arange(len(order)), bounds):  # one gather per stream position
            picked = order[group]
            s = int(positions[picked[0]])
            size, at = int(self.sizes[s]), int(self.offsets[s])
            first = int(starts[group[0]])
            rows = self.xp.asarray(self.rows[chunks[picked]])
            gathered[first : first + size * len(group)] = self.matrix[rows, at : at + size].reshape(-1)
        host = memoryview(to_host(gathered))
        out: list[memoryview] = [host] * len(ids)
        for j, i in enumerate(order.tolist()):
            out[i] = host[int(starts[j]) : int(ends[j])]
        return out
