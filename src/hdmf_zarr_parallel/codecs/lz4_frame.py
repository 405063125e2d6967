"""numcodecs' LZ4 framing: a 4-byte little-endian uncompressed size, then one raw LZ4 block.

nvCOMP LZ4 with the RAW bitstream emits the bare block; ``numcodecs.LZ4`` (and zarr's
``numcodecs.lz4`` codec) expects this header in front of it.
"""

from __future__ import annotations

__all__ = ["HEADER_SIZE", "add_header", "header_bytes", "split_header", "strip_header"]

HEADER_SIZE = 4
_MAX = 2**31 - 1  # numcodecs stores the size as a signed 32-bit int


def header_bytes(uncompressed_nbytes: int) -> bytes:
    """The 4-byte header numcodecs.LZ4 writes for an input of ``uncompressed_nbytes``."""
    n = int(uncompressed_nbytes)
    if n < 0 or n > _MAX:
        raise ValueError(f"LZ4 (numcodecs) cannot frame {n} bytes: the limit is {_MAX}")
    return n.to_bytes(HEADER_SIZE, "little")


def add_header(raw_block: bytes | bytearray | memoryview, uncompressed_nbytes: int) -> bytes:
    """Frame a raw LZ4 block as numcodecs.LZ4 does."""
    return header_bytes(uncompressed_nbytes) + bytes(raw_block)


def split_header(framed: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """``(uncompressed_nbytes, raw_block_view)`` of a numcodecs.LZ4-framed buffer."""
    mv = memoryview(framed).cast("B")
    if len(mv) < HEADER_SIZE:
        raise ValueError(f"LZ4 (numcodecs) buffer too short for its header: {len(mv)} bytes")
    n = int.from_bytes(mv[:HEADER_SIZE], "little", signed=True)
    if n < 0:
        raise ValueError(f"LZ4 (numcodecs) header holds a negative size {n}")
    return n, mv[HEADER_SIZE:]


def strip_header(framed: bytes | bytearray | memoryview) -> bytes:
    """The raw LZ4 block inside a numcodecs.LZ4-framed buffer."""
    return bytes(split_header(framed)[1])
