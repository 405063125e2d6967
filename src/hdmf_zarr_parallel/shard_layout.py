"""One shard layout for both paths: a zarr ``sharding_indexed`` shard from encoded inner chunks.

The format (zarr v3 sharding codec): the encoded inner chunks are concatenated (in any
order: the GPU path uses C order of the inner-chunk coordinates, the CPU path the order
zarr's own encoder writes, so that its shards are byte-identical to zarr's) and an index
is stored at the start or the end of the shard. The index holds, per inner chunk in C order of its
coordinates, ``(offset, nbytes)`` as little-endian uint64, with ``2**64 - 1`` in both
fields for an empty (absent) chunk; offsets count from the start of the shard, so with
the index at the start they include the index size. When the index codecs are
``[bytes, crc32c]`` the CRC32C of the index bytes follows as 4 little-endian bytes.

crc32c comes from ``google_crc32c``, which zarr itself depends on. Index chains other
than ``bytes(little)`` with an optional ``crc32c`` are not built here (see
:class:`~hdmf_zarr_parallel.chain.Sharding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .parts import Parts

__all__ = ["EMPTY", "build_shard", "build_shards", "crc32c", "parse_shard_index", "shard_index", "shard_index_nbytes"]

EMPTY = 2**64 - 1
_CRC_NBYTES = 4

Chunk = bytes | bytearray | memoryview | None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli) of ``data``, as zarr's ``crc32c`` codec computes it."""
    try:
        import google_crc32c

        return int(google_crc32c.value(bytes(data) if not isinstance(data, bytes) else data))
    except ImportError:  # pragma: no cover - zarr depends on google-crc32c
        import crc32c as _crc32c

        return int(_crc32c.crc32c(data))


def shard_index_nbytes(chunks_per_shard: Sequence[int], crc32c: bool) -> int:
    """Size of the encoded shard index in bytes."""
    return 16 * int(math.prod(chunks_per_shard)) + (_CRC_NBYTES if crc32c else 0)


def _nbytes(c: Chunk) -> int:
    if c is None:
        return 0
    if isinstance(c, memoryview):
        return c.nbytes
    return len(c)


def build_shard(
    encoded_inner_chunks: Sequence[Chunk],
    chunks_per_shard: tuple[int, ...],
    index_location: Literal["start", "end"] = "end",
    crc32c: bool = True,
    order: Sequence[int] | None = None,
) -> bytes | None:
    """Assemble one shard.

    ``encoded_inner_chunks`` holds one entry per inner chunk in C order of the inner-chunk
    coordinates (``len == prod(chunks_per_shard)``); ``None`` or an empty buffer marks an
    empty chunk (not stored, as zarr does for all-fill-value chunks with
    ``write_empty_chunks=False``). ``order`` lists those C-order positions in the order
    their bytes follow each other in the shard (default: C order). Returns ``None`` when
    every inner chunk is empty: the shard must then not be written (zarr deletes/skips it).
    """
    n = int(math.prod(chunks_per_shard))
    if len(encoded_inner_chunks) != n:
        raise ValueError(
            f"build_shard: got {len(encoded_inner_chunks)} inner chunks for chunks_per_shard "
            f"{tuple(chunks_per_shard)} (expected {n})"
        )
    shard = build_shards(encoded_inner_chunks, chunks_per_shard, index_location, crc32c, order)[0]
    return None if shard is None else shard.joined()


def build_shards(
    encoded_inner_chunks: Sequence[Chunk],
    chunks_per_shard: tuple[int, ...],
    index_location: Literal["start", "end"] = "end",
    crc32c: bool = True,
    order: Sequence[int] | None = None,
) -> list[Parts | None]:
    """Assemble consecutive shards: :func:`build_shard` for each ``prod(chunks_per_shard)`` entries
    of ``encoded_inner_chunks``, with every shard's index computed in one set of array operations.

    Each shard comes as :class:`~.parts.Parts` (its stored chunks and its index, not joined: a
    file sink writes them with one ``os.writev``), ``None`` where all its chunks are empty."""
    per_shard = int(math.prod(chunks_per_shard))
    if index_location not in ("start", "end"):
        raise ValueError(f"build_shard: index_location must be 'start' or 'end', got {index_location!r}")
    if per_shard == 0 or len(encoded_inner_chunks) % per_shard:
        raise ValueError(
            f"build_shards: {len(encoded_inner_chunks)} inner chunks do not make whole shards of {per_shard}"
        )
    sizes = np.fromiter(map(_nbytes, encoded_inner_chunks), np.uint64, len(encoded_inner_chunks))
    sizes = sizes.reshape(-1, per_shard)
    positions = np.arange(per_shard) if order is None else np.asarray(order, dtype=np.intp)
    index_nbytes = shard_index_nbytes(chunks_per_shard, crc32c)
    indexes = shard_indexes(sizes, positions, index_nbytes if index_location == "start" else 0)
    out: list[Parts | None] = []
    in_order = positions.tolist()
    shard_nbytes = (sizes.sum(axis=1) + np.uint64(index_nbytes)).tolist()
    for shard, (index, shard_sizes) in enumerate(zip(indexes, sizes.tolist(), strict=True)):
        first = shard * per_shard
        parts = [encoded_inner_chunks[first + i] for i in in_order if shard_sizes[i]]
        if not parts:
            out.append(None)
            continue
        parts = _flattened(parts)
        index_bytes = encoded_index(index, crc32c)
        pieces = [index_bytes, *parts] if index_location == "start" else [*parts, index_bytes]
        out.append(Parts(pieces, shard_nbytes[shard]))
    return out


def _flattened(chunks: list) -> list:
    """The chunks' bytes as a flat list of pieces: a framed chunk (:class:`~.parts.Parts`) gives its own."""
    if not any(type(c) is Parts for c in chunks):
        return chunks
    return [piece for c in chunks for piece in (c.pieces if type(c) is Parts else (c,))]


def shard_indexes(sizes: np.ndarray, order: np.ndarray, start: int) -> np.ndarray:
    """The ``(offset, nbytes)`` index rows (``<u8``, no crc) of shards whose inner chunks have ``sizes``
    (one row per shard, C order; 0: not stored), their bytes following each other in ``order`` from
    byte ``start`` (``order`` may leave out chunks of size 0): shape ``(shards, inner chunks, 2)``."""
    in_order = sizes[:, order]
    index = np.empty((*sizes.shape, 2), dtype="<u8")
    index[:, order, 0] = np.cumsum(in_order, axis=1) - in_order + np.uint64(start)
    index[:, :, 1] = sizes
    index[sizes == 0] = EMPTY
    return index


def shard_index(sizes: Sequence[int], stored: Sequence[int], start: int, crc32c: bool = True) -> bytes:
    """The encoded index of a shard: ``sizes`` per inner chunk in C order; ``stored``, the C-order
    positions of the stored chunks in the order their bytes follow each other from byte ``start``."""
    positions = np.asarray(stored, dtype=np.intp)
    kept = np.zeros((1, len(sizes)), np.uint64)
    kept[0, positions] = np.asarray(sizes, np.uint64)[positions]
    return encoded_index(shard_indexes(kept, positions, start)[0], crc32c)


def encoded_index(index: np.ndarray, crc32c: bool) -> bytes:
    """One shard's index rows as stored: little-endian uint64 pairs, then their CRC32C when the chain has one."""
    index_bytes = index.tobytes()
    if crc32c:
        index_bytes += _crc32c(index_bytes).to_bytes(_CRC_NBYTES, "little")
    return index_bytes


_crc32c = crc32c  # the parameters named crc32c hide the function


def parse_shard_index(
    shard: bytes | bytearray | memoryview,
    chunks_per_shard: tuple[int, ...],
    index_location: Literal["start", "end"] = "end",
    crc32c: bool = True,
) -> np.ndarray:
    """Read back a shard's index as a ``chunks_per_shard + (2,)`` uint64 array (checks the crc)."""
    mv = memoryview(shard).cast("B")
    size = shard_index_nbytes(chunks_per_shard, crc32c)
    raw = bytes(mv[:size] if index_location == "start" else mv[len(mv) - size :])
    if crc32c:
        body, stored = raw[:-_CRC_NBYTES], int.from_bytes(raw[-_CRC_NBYTES:], "little")
        if _crc32c(body) != stored:
            raise ValueError("shard index crc32c mismatch")
        raw = body
    return np.frombuffer(raw, dtype="<u8").reshape(tuple(chunks_per_shard) + (2,))
