"""zlib framing around a raw deflate stream: what ``numcodecs.zlib`` reads.

nvCOMP's Deflate with the RAW bitstream emits a bare deflate stream (measured on an H200:
``zlib.decompress(wbits=-15)`` reads it, ``wbits=15`` does not). A zlib stream is that
deflate stream between a 2-byte header and the big-endian Adler-32 of the uncompressed
bytes (RFC 1950). The Adler-32 of every chunk is computed with array operations, so the
same code runs on the device (cupy) and on the host (numpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HEADER", "adler32_rows", "frame"]

# CMF 0x78: deflate, 32 KiB window; FLG 0x9c: default level, (CMF*256 + FLG) % 31 == 0
HEADER = b"\x78\x9c"
_MOD = 65521
# Work on at most this many bytes at a time: the int64 temporaries stay near 128 MiB.
_STEP_ELEMENTS = 1 << 23


def adler32_rows(xp: Any, rows: Any) -> np.ndarray:
    """The Adler-32 of each row of a 2-D uint8 array, as a host ``uint32`` array.

    Adler-32 of ``d[0..n)`` is ``B << 16 | A`` with ``A = 1 + sum(d) mod 65521`` and
    ``B = n + sum((n - i) * d[i]) mod 65521``: two weighted sums per row, taken over
    blocks of rows and columns so that memory stays bounded and int64 cannot overflow
    (weights are reduced mod 65521 first).
    """
    count, n = rows.shape
    columns = max(1, min(n, _STEP_ELEMENTS))
    row_step = max(1, _STEP_ELEMENTS // columns)
    a = xp.zeros(count, dtype=xp.int64)
    b = xp.zeros(count, dtype=xp.int64)
    for start in range(0, n, columns):
        stop = min(n, start + columns)
        weights = (n - xp.arange(start, stop, dtype=xp.int64)) % _MOD
        for first in range(0, count, row_step):
            block = rows[first : first + row_step, start:stop].astype(xp.int64)
            a[first : first + row_step] = (a[first : first + row_step] + block.sum(axis=1)) % _MOD
            b[first : first + row_step] = (b[first : first + row_step] + (block * weights).sum(axis=1)) % _MOD
    a = (a + 1) % _MOD
    b = (b + n) % _MOD
    checksums = (b << 16) | a
    checksums = checksums.get() if hasattr(checksums, "get") else checksums
    return np.asarray(checksums, dtype=np.uint32)


def frame(deflate: bytes | memoryview, adler32: int) -> bytes:
    """A zlib stream from a raw deflate stream and the Adler-32 of its uncompressed bytes."""
    return HEADER + bytes(deflate) + int(adler32).to_bytes(4, "big")
