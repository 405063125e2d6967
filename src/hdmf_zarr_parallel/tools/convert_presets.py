"""Named storage layouts for ``convert --layout``: one compressor and one chunk (and shard)
geometry for every streamed dataset, chosen so that a GPU gets many independent compressed
frames per batch.

nvCOMP compresses each zstd or gzip chunk as one serial frame, so a GPU needs many small
frames to be busy; a chunk cannot be split into several frames without breaking other
readers. The presets get many frames in two readable ways:

* ``gpu-shards``: zstd (zarr's default ``ZstdCodec``, level 0 = zstd's 3, no filters) in
  64 KiB inner chunks, packed into shards of about 3 MiB (``sharding_indexed``): a 3 MiB
  shard is 48 frames. Readers need Zarr v3 sharding (zarr-python >= 3, tensorstore, zarrs);
  a random read decodes 64 KiB pieces but first reads the shard's index.
* ``gpu-blosc``: Blosc (``cname="zstd"``, ``clevel=5``, byte shuffle, no filters) in plain
  4 MiB chunks: c-blosc splits each chunk into independent blocks, so one chunk is many
  frames. ``blosc`` is a core Zarr v3 codec (zarr-python 3, tensorstore, zarrs, and v3
  readers without sharding); no index reads; the smallest unit a read decodes is 4 MiB.

``keep`` (the default) is no preset: the source's chunks and codecs, or what the layout
options say. A preset is explicit and complete, so it refuses the options it sets
(``codec``, ``level``, ``chunks``, ``chunk_mb``, ``shards``) instead of mixing with them.

Geometry (:func:`preset_layout`): every axis after the first spans at most
:data:`TRAILING_CAP` elements (halved further if one row of them alone exceeds the target),
the first axis takes the rest of the target bytes; shards span whole chunks, the array's
whole (padded) extent on the other axes, and as many chunk rows along the first axis as fit
the shard target (at least one). An int16 ephys recording of 384 channels gets (512, 64)
inner chunks in (4096, 384) shards, or (32768, 64) Blosc chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KEEP = "keep"
TRAILING_CAP = 64  # elements per chunk on every axis after the first (channels, pixels)


@dataclass(frozen=True)
class LayoutPreset:
    """What one preset writes for each streamed dataset."""

    name: str
    codec: str  # a name of :data:`.convert_plan.CODECS`
    level: int
    chunk_bytes: int  # target uncompressed bytes of one chunk (inner chunk when sharded)
    shard_bytes: int | None  # target bytes of one shard; None: no sharding
    summary: str


PRESETS: dict[str, LayoutPreset] = {
    preset.name: preset
    for preset in (
        LayoutPreset(
            "gpu-shards",
            codec="zstd",
            level=0,
            chunk_bytes=64 << 10,
            shard_bytes=3 << 20,
            summary="zstd, 64 KiB inner chunks in ~3 MiB shards (needs a Zarr v3 reader with sharding)",
        ),
        LayoutPreset(
            "gpu-blosc",
            codec="blosc",
            level=5,
            chunk_bytes=4 << 20,
            shard_bytes=None,
            summary="Blosc-zstd with byte shuffle, 4 MiB chunks, no shards (read by every Blosc reader)",
        ),
    )
}
LAYOUTS = (KEEP, *PRESETS)


def preset_chunks(shape: tuple[int, ...], itemsize: int, target: int) -> tuple[int, ...]:
    """A chunk of about ``target`` bytes: at most :data:`TRAILING_CAP` on every axis after the
    first (halved while a single row of them exceeds ``target``), the first axis the rest."""
    trailing = [min(int(s), TRAILING_CAP) for s in shape[1:]]
    while trailing and math.prod(trailing) * itemsize > target and max(trailing) > 1:
        i = trailing.index(max(trailing))
        trailing[i] = -(-trailing[i] // 2)
    row = math.prod(trailing) * itemsize
    first = max(1, min(int(shape[0]), target // row))
    return (first, *trailing)


def preset_shards(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, target: int) -> tuple[int, ...]:
    """A shard of whole ``chunks``, about ``target`` bytes: the whole (padded) extent on the other
    axes, halved while one row of chunks alone exceeds ``target``, and as many chunk rows
    along the first axis as fit (at least one, at most the array's)."""
    per_axis = [math.ceil(s / c) for s, c in zip(shape[1:], chunks[1:], strict=True)]  # chunks per shard, axes 1..

    def row_bytes() -> int:
        return chunks[0] * math.prod(n * c for n, c in zip(per_axis, chunks[1:], strict=True)) * itemsize

    while per_axis and row_bytes() > target and max(per_axis) > 1:
        i = per_axis.index(max(per_axis))
        per_axis[i] = -(-per_axis[i] // 2)
    rows = max(1, min(target // row_bytes(), math.ceil(shape[0] / chunks[0])))
    return (rows * chunks[0], *(n * c for n, c in zip(per_axis, chunks[1:], strict=True)))


def preset_layout(
    preset: LayoutPreset, shape: tuple[int, ...], itemsize: int
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The chunks and shards (``None``: unsharded) ``preset`` gives an array of ``shape``."""
    chunks = preset_chunks(shape, itemsize, preset.chunk_bytes)
    if preset.shard_bytes is None:
        return chunks, None
    return chunks, preset_shards(shape, chunks, itemsize, preset.shard_bytes)


def conflicting_options(preset: str, given: dict[str, object]) -> str | None:
    """Why the options in ``given`` (name -> value, ``None`` = not given) cannot go with
    ``preset``, or ``None`` when they can."""
    if preset == KEEP:
        return None
    named = [name for name, value in given.items() if value is not None]
    if not named:
        return None
    flags = ", ".join("--" + name.replace("_", "-") for name in named)
    return (
        f"--layout {preset} sets the codec, level, chunks and shards itself; drop {flags} "
        "(or give them without --layout)"
    )
