"""c-blosc 1 chunks built around nvCOMP's RAW output: block layout, per-block shuffles, framing.

A Blosc chunk (the format of c-blosc 1.x, which numcodecs, tensorstore and zarrs all decode
with c-blosc) is split into independent blocks, each shuffled and compressed on its own, so
one large chunk gives nvCOMP many small units to compress at once. The rules below are
those of c-blosc 1.21 (``blosc/blosc.c``: ``write_compression_header``, ``blosc_c``,
``blosc_d``, ``split_block``, ``blosc_compress_context``, ``blosc_cbuffer_validate``;
``blosc/shuffle-generic.h``; ``blosc/shuffle.c`` and ``blosc/bitshuffle-generic.c`` for
bitshuffle):

* a 16-byte header: format version 2, compressor format version 1, flags, typesize (one
  byte), then little-endian int32 ``nbytes`` (uncompressed), ``blocksize`` and ``cbytes``
  (the whole chunk, header included; readers refuse a buffer of any other length). Flags:
  bit 0 byte shuffle, bit 1 memcpyed, bit 2 bitshuffle, bit 3 must be 0, bit 4 "don't split",
  bits 5-7 the compressor format (LZ4 = 1, also for lz4hc; Zstd = 4);
* ``nblocks = ceil(nbytes / blocksize)`` int32 offsets (from the chunk's start) of the
  blocks, then the blocks; the last one holds the ``nbytes % blocksize`` leftover bytes;
* a block is shuffled as a whole (byte shuffle: byte ``j`` of element ``i`` goes to
  ``j * (B // t) + i``, the ``B % t`` trailing bytes stay; bitshuffle: see
  :func:`shuffle_blocks`), then cut into ``typesize`` equal streams when it is not the
  leftover block, the "don't split" flag is clear, ``typesize <= 16`` and
  ``blocksize / typesize >= 128`` (the decoder's own test), else kept as one stream;
* each stream is an int32 size then that many bytes: the compressed stream (a zstd frame,
  or a raw LZ4 block: what nvCOMP's RAW bitstream holds), or, when compression did not make
  it smaller, the stream's bytes as they are (the size then equals the stream's length,
  which is how the decoder tells them apart);
* when the blocked form would not be smaller than ``nbytes + 16``, the chunk is the header
  with the memcpyed flag, then the unshuffled bytes (c-blosc's own fallback).

The block size is ours to choose (the header records it; zarr's ``blocksize=0`` means
"the encoder picks"): each stream is at most :data:`STREAM_NBYTES`, a size nvCOMP compresses
efficiently, whatever the chunk size, the leftover block is small, and every stream starts
on a 16-byte boundary, as nvCOMP needs. So the bytes differ from c-blosc's own encoding of the same chunk, but decode
to exactly the same data. Like c-blosc, zstd blocks are never split and LZ4 blocks are.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..parts import Parts

__all__ = [
    "HEADER_NBYTES",
    "MAX_BUFFERSIZE",
    "MIN_BUFFERSIZE",
    "BloscLayout",
    "BloscParams",
    "frame_chunks",
    "layout",
    "shuffle_blocks",
]

HEADER_NBYTES = 16
VERSION_FORMAT = 2  # BLOSC_VERSION_FORMAT
VERSION_LZ = 1  # BLOSC_{LZ4,LZ4HC,ZSTD}_VERSION_FORMAT
DOSHUFFLE, MEMCPYED, DOBITSHUFFLE, DONT_SPLIT = 0x1, 0x2, 0x4, 0x10
#: compressor format in the flags' bits 5-7 (BLOSC_*_FORMAT); lz4hc writes LZ4's format
FORMATS = {"lz4": 1, "lz4hc": 1, "zstd": 4}
NOSHUFFLE, SHUFFLE, BITSHUFFLE = 0, 1, 2
MIN_BUFFERSIZE = 128  # smaller buffers are only ever memcpyed
MAX_SPLITS = 16
MAX_TYPESIZE = 255  # larger typesizes are treated as 1
MAX_BUFFERSIZE = 2**31 - 1 - HEADER_NBYTES  # BLOSC_MAX_BUFFERSIZE
#: the uncompressed bytes of one stream nvCOMP compresses (the block size follows from it)
STREAM_NBYTES = 128 << 10
#: every stream starts at a multiple of this in the compression input (nvCOMP's alignment)
ALIGN = 16


@dataclass(frozen=True)
class BloscParams:
    """What a Blosc chunk's bytes depend on: compressor, level, shuffle and typesize (1..255)."""

    cname: str
    clevel: int
    shuffle: int
    typesize: int

    @classmethod
    def from_config(cls, config: dict, *, v3: bool) -> BloscParams:
        """From zarr's ``blosc`` configuration (``v3``) or from ``numcodecs.blosc``'s, with c-blosc's
        resolutions: numcodecs' automatic shuffle, and typesizes above 255 treated as 1."""
        if v3:  # zarr fills in typesize and shuffle from the data type (evolve_from_array_spec)
            cname, clevel = config.get("cname", "zstd"), config.get("clevel", 5)
            shuffle = {"noshuffle": NOSHUFFLE, "shuffle": SHUFFLE, "bitshuffle": BITSHUFFLE}[config["shuffle"]]
            typesize = int(config.get("typesize") or 1)
        else:  # numcodecs.Blosc sees zarr's chunk as bytes: typesize 1 unless configured
            cname, clevel = config.get("cname", "lz4"), config.get("clevel", 5)
            typesize = int(config.get("typesize") or 1)
            shuffle = int(config.get("shuffle", SHUFFLE))
            if shuffle == -1:  # AUTOSHUFFLE, resolved before c-blosc clamps the typesize
                shuffle = BITSHUFFLE if typesize == 1 else SHUFFLE
        if isinstance(cname, bytes):
            cname = cname.decode()
        typesize = 1 if typesize > MAX_TYPESIZE else typesize
        return cls(str(cname), int(clevel), int(shuffle), typesize)


@dataclass(frozen=True, eq=False)
class BloscLayout:
    """The blocks and streams of every chunk of ``nbytes`` bytes under one :class:`BloscParams`."""

    nbytes: int
    typesize: int
    shuffle: int
    blocksize: int
    nblocks: int
    leftover: int
    split: bool
    flags: int
    #: start and length of each stream in a chunk's (shuffled) bytes, in storage order
    offsets: np.ndarray
    sizes: np.ndarray
    #: index of the first stream of each block
    first_stream: np.ndarray

    @property
    def nstreams(self) -> int:
        return len(self.sizes)


@functools.lru_cache(maxsize=64)
def layout(params: BloscParams, nbytes: int) -> BloscLayout:
    """Our block size and split for chunks of ``nbytes`` (at least :data:`MIN_BUFFERSIZE`)."""
    t = params.typesize
    if not MIN_BUFFERSIZE <= nbytes <= MAX_BUFFERSIZE:
        raise ValueError(f"a blosc chunk of {nbytes} bytes is not built on the GPU path")
    unit = ALIGN * t  # whole elements, and 16-byte aligned streams even when split
    splittable = params.cname != "zstd" and 1 < t <= MAX_SPLITS  # c-blosc's FORWARD_COMPAT split rule
    target = STREAM_NBYTES * (t if splittable else 1)
    # k equal blocks of at most ``target`` bytes, a multiple of ``unit``; the leftover (never split,
    # so one stream) is then shorter than k units
    k = -(-nbytes // target)
    blocksize = nbytes // k // unit * unit or nbytes
    split = splittable and blocksize % unit == 0 and blocksize // t >= MIN_BUFFERSIZE
    nfull, leftover = divmod(nbytes, blocksize)
    per_block = t if split else 1
    stream = blocksize // per_block
    offsets = (np.arange(nfull * per_block, dtype=np.int64) * stream).tolist()
    sizes = [stream] * len(offsets)
    first = list(range(0, nfull * per_block, per_block))
    if leftover:  # never split
        first.append(len(offsets))
        offsets.append(nfull * blocksize)
        sizes.append(leftover)
    flags = FORMATS[params.cname] << 5
    flags |= {NOSHUFFLE: 0, SHUFFLE: DOSHUFFLE, BITSHUFFLE: DOBITSHUFFLE}[params.shuffle]
    flags |= 0 if split else DONT_SPLIT
    return BloscLayout(
        nbytes=nbytes,
        typesize=t,
        shuffle=params.shuffle,
        blocksize=blocksize,
        nblocks=nfull + (leftover > 0),
        leftover=leftover,
        split=split,
        flags=flags,
        offsets=np.asarray(offsets, dtype=np.int64),
        sizes=np.asarray(sizes, dtype=np.int64),
        first_stream=np.asarray(first, dtype=np.int64),
    )


# -- shuffles -------------------------------------------------------------------------------------
def shuffle_blocks(xp: Any, rows: Any, lay: BloscLayout) -> Any:
    """Each chunk (a row of a ``(chunks, nbytes)`` uint8 array) with every block shuffled as c-blosc
    does before compressing it; a new C-contiguous array (the rows themselves without shuffle)."""
    if lay.shuffle == NOSHUFFLE or (lay.shuffle == SHUFFLE and lay.typesize == 1):
        return rows
    count = rows.shape[0]
    out = xp.empty_like(rows)
    nfull = lay.nblocks - (lay.leftover > 0)
    body = nfull * lay.blocksize
    pieces = [(0, body, nfull, lay.blocksize), (body, lay.nbytes, 1, lay.leftover)]
    for start, stop, blocks, size in pieces:
        if blocks and size:
            segment = rows[:, start:stop].reshape(count, blocks, size)
            out[:, start:stop] = _shuffle(xp, segment, lay.typesize, lay.shuffle).reshape(count, stop - start)
    return out


def _shuffle(xp: Any, blocks: Any, t: int, mode: int) -> Any:
    """Shuffle ``(chunks, blocks, B)`` bytes block by block (c-blosc's ``blosc_c``, one block size)."""
    count, nblocks, size = blocks.shape
    elements = size // t
    if mode == BITSHUFFLE and (size < t or elements % 8):
        return blocks  # blosc_c skips blocks shorter than one element; bitshuffle copies the others
    head = elements * t
    out = xp.empty_like(blocks)
    planes = blocks[..., :head].reshape(count, nblocks, elements, t).transpose(0, 1, 3, 2)
    planes = xp.ascontiguousarray(planes)  # byte j of every element, then byte j + 1 ...
    if mode == BITSHUFFLE:
        planes = _bit_planes(xp, planes)
    out[..., :head] = planes.reshape(count, nblocks, head)
    out[..., head:] = blocks[..., head:]  # the bytes after the last whole element stay
    return out


_MASKS = (0x00AA00AA00AA00AA, 0x0000CCCC0000CCCC, 0x00000000F0F0F0F0)


def _bit_planes(xp: Any, planes: Any) -> Any:
    """bitshuffle's second and third steps on byte planes ``(..., t, n)`` (n a multiple of 8): each
    8 bytes' 8x8 bit matrix transposed (``TRANS_BIT_8X8`` on a little-endian uint64), then bit row
    ``k`` of every group gathered, so plane ``j`` becomes its 8 bit rows of ``n / 8`` bytes each."""
    x = planes.view(xp.uint64)  # (..., t, n / 8): one word per 8 elements' byte j
    for shift, mask in zip((7, 14, 28), _MASKS, strict=True):
        m = xp.uint64(mask)
        s = xp.uint64(shift)
        tmp = (x ^ (x >> s)) & m
        x = x ^ tmp ^ (tmp << s)
    groups = x.view(xp.uint8).reshape(*planes.shape[:-1], planes.shape[-1] // 8, 8)  # (..., t, g, bit)
    return xp.ascontiguousarray(xp.swapaxes(groups, -1, -2))  # (..., t, bit, g)


# -- framing --------------------------------------------------------------------------------------
def header(flags: int, typesize: int, nbytes: int, blocksize: int, cbytes: int) -> bytes:
    """The 16-byte header of a chunk."""
    return struct.pack("<BBBBiii", VERSION_FORMAT, VERSION_LZ, flags, typesize, nbytes, blocksize, cbytes)


def frame_chunks(lay: BloscLayout, compressed: Sequence[Any], uncompressed: Any) -> list[bytes | Parts]:
    """Blosc chunks from the compressed streams of a batch (``lay.nstreams`` per chunk, in order).

    A stream that compression did not shrink is stored as it is (``uncompressed.streams``: the
    shuffled bytes, read back only for those); a chunk whose blocked form would not be smaller
    than ``nbytes + 16`` is stored memcpyed (``uncompressed.chunk``: its unshuffled bytes).
    """
    per = lay.nstreams
    if len(compressed) % per:
        raise ValueError(f"{len(compressed)} compressed streams are not a whole number of chunks of {per}")
    count = len(compressed) // per
    lengths = np.fromiter((memoryview(c).nbytes for c in compressed), np.int64, len(compressed)).reshape(count, per)
    # c-blosc: a stream whose size equals its length is read back as it is; 0 means "did not compress"
    raw = (lengths >= lay.sizes) | (lengths == 0)
    stored = np.where(raw, lay.sizes, lengths)
    data_start = HEADER_NBYTES + 4 * lay.nblocks
    totals = data_start + (4 + stored).sum(axis=1)
    memcpyed = totals > lay.nbytes + HEADER_NBYTES
    wanted = np.flatnonzero((raw & ~memcpyed[:, None]).reshape(-1))
    as_is = dict(zip(wanted.tolist(), uncompressed.streams(wanted), strict=True)) if wanted.size else {}
    ends = data_start + np.cumsum(4 + stored, axis=1)
    starts = ends - (4 + stored)
    out: list[bytes | Parts] = []
    for k in range(count):
        if memcpyed[k]:
            head = header(lay.flags | MEMCPYED, lay.typesize, lay.nbytes, lay.blocksize, lay.nbytes + HEADER_NBYTES)
            out.append(head + uncompressed.chunk(k))
            continue
        parts = [
            header(lay.flags, lay.typesize, lay.nbytes, lay.blocksize, int(totals[k])),
            starts[k, lay.first_stream].astype("<i4").tobytes(),
        ]
        prefixes = stored[k].astype("<i4").tobytes()
        for s in range(per):
            parts.append(prefixes[4 * s : 4 * s + 4])
            parts.append(as_is[k * per + s] if raw[k, s] else compressed[k * per + s])
        out.append(Parts(parts, int(totals[k])))  # written where they lie, not joined
    return out
