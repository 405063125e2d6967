"""The bytes around nvCOMP's RAW output that make it what a stock CPU codec reads.

nvCOMP's RAW bitstream is the bare compressed data of one chunk. Some CPU codecs expect
more around it:

* ``numcodecs.lz4`` reads a 4-byte little-endian uncompressed size, then one raw LZ4 block;
* ``numcodecs.zlib`` reads a zlib stream: a 2-byte header, a raw deflate stream (what nvCOMP
  Deflate RAW emits: ``zlib.decompress(wbits=-15)`` reads it, ``wbits=15`` does not) and the
  big-endian Adler-32 of the uncompressed bytes (RFC 1950). The Adler-32 of every chunk is
  computed with array operations, so the same code runs on the device (cupy) and on the
  host (numpy);
* ``gzip`` reads a gzip member (RFC 1952), which nvCOMP Gzip RAW emits whole; a bare deflate
  stream is completed into one by :func:`gzip_member`.

Framed chunks are :class:`~..parts.Parts` (header, nvCOMP's output where it lies, trailer): a
file sink writes them without joining them. These are plain byte helpers; :mod:`.algorithms`
says which one each output algorithm uses.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from ..parts import Parts

__all__ = [
    "LZ4_HEADER_SIZE",
    "ZLIB_HEADER",
    "adler32_rows",
    "gzip_member",
    "is_gzip_member",
    "lz4_add_header",
    "lz4_header",
    "lz4_split_header",
    "lz4_strip_header",
    "zlib_frame",
    "zlib_header",
]

# -- numcodecs.lz4 --------------------------------------------------------------------------------
LZ4_HEADER_SIZE = 4
_LZ4_MAX = 2**31 - 1  # numcodecs stores the size as a signed 32-bit int


def lz4_header(uncompressed_nbytes: int) -> bytes:
    """The 4-byte header numcodecs.LZ4 writes for an input of ``uncompressed_nbytes``."""
    n = int(uncompressed_nbytes)
    if n < 0 or n > _LZ4_MAX:
        raise ValueError(f"LZ4 (numcodecs) cannot frame {n} bytes: the limit is {_LZ4_MAX}")
    return n.to_bytes(LZ4_HEADER_SIZE, "little")


def lz4_add_header(raw_block: bytes | bytearray | memoryview, uncompressed_nbytes: int) -> Parts:
    """Frame a raw LZ4 block as numcodecs.LZ4 does: its header, then the block where it lies (not copied)."""
    return Parts((lz4_header(uncompressed_nbytes), raw_block), LZ4_HEADER_SIZE + memoryview(raw_block).nbytes)


def lz4_split_header(framed: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """``(uncompressed_nbytes, raw_block_view)`` of a numcodecs.LZ4-framed buffer."""
    mv = memoryview(framed).cast("B")
    if len(mv) < LZ4_HEADER_SIZE:
        raise ValueError(f"LZ4 (numcodecs) buffer too short for its header: {len(mv)} bytes")
    n = int.from_bytes(mv[:LZ4_HEADER_SIZE], "little", signed=True)
    if n < 0:
        raise ValueError(f"LZ4 (numcodecs) header holds a negative size {n}")
    return n, mv[LZ4_HEADER_SIZE:]


def lz4_strip_header(framed: bytes | bytearray | memoryview) -> bytes:
    """The raw LZ4 block inside a numcodecs.LZ4-framed buffer."""
    return bytes(lz4_split_header(framed)[1])


# -- numcodecs.zlib -------------------------------------------------------------------------------
# CMF 0x78: deflate, 32 KiB window; FLG 0x9c: default level, (CMF*256 + FLG) % 31 == 0
ZLIB_HEADER = b"\x78\x9c"
ZLIB_TRAILER_SIZE = 4
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


def zlib_header(level: int | None = None) -> bytes:
    """The 2-byte header zlib writes at ``level`` (None: its default, 6): deflate with a 32 KiB window,
    and the level's class in FLEVEL (0-1, 2-5, 6, 7-9), which readers ignore but zlib records."""
    level = 6 if level is None or level < 0 else level
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg += 31 - (0x78 * 256 + flg) % 31
    return bytes((0x78, flg))


def zlib_frame(deflate: bytes | memoryview, adler32: int, level: int | None = None) -> Parts:
    """A zlib stream from a raw deflate stream and the Adler-32 of its uncompressed bytes: the
    header zlib writes at ``level``, the stream where it lies (not copied) and the trailer."""
    header, trailer = zlib_header(level), int(adler32).to_bytes(ZLIB_TRAILER_SIZE, "big")
    return Parts((header, deflate, trailer), len(header) + memoryview(deflate).nbytes + len(trailer))


# -- gzip -----------------------------------------------------------------------------------------
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_HEADER = _GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown


def is_gzip_member(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` starts like a gzip member (its two magic bytes)."""
    return len(blob) >= 2 and bytes(blob[:2]) == _GZIP_MAGIC


def gzip_member(deflate: bytes | memoryview, uncompressed: bytes) -> bytes:
    """A gzip member from a raw deflate stream: header, the stream, CRC32 and size of the input."""
    crc = zlib.crc32(uncompressed) & 0xFFFFFFFF
    size = len(uncompressed) & 0xFFFFFFFF
    return _GZIP_HEADER + bytes(deflate) + crc.to_bytes(4, "little") + size.to_bytes(4, "little")
