"""The GPU data path: plain synchronous functions, usable from any thread or process.

Per task (one unit-aligned tile of a dataset, about ``gpu_batch_bytes``):

  read (host, iterator) → upload (pinned staging, async H2D) → carve and pad chunks on
  the device → skip all-fill chunks → byte shuffle (when the chain has one) → ONE batched
  nvCOMP encode → D2H of the compressed bytes → assemble shards on the host → store (by a
  pool of host writer threads, or in the calling thread).

:func:`encode_region_on_lane` / :func:`encode_units_on_lane` do the device part (upload,
carve, fill check, batched encode with out-of-memory halving, shard assembly) on the
lane they are given; :func:`store_encoded` / :func:`put_encoded` store the result. The GPU
engine (:mod:`.engine`) and the Dask engine's GPU workers (:mod:`.worker_lanes`) only add
the scheduling around them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from .._zarr import write_empty_chunks
from ..errors import ChunkWriteError
from ..rows import chunk_matrix, fill_rows, shuffle_rows
from ..shard_layout import build_shards
from ..write.dataset import DatasetWrite
from ..write.plan import Coords, Region
from ..write.target import DatasetTarget
from .lanes import Lane
from .plan import GpuCodecPlan

logger = logging.getLogger(__name__)

Encoded = tuple[Coords, bytes | memoryview | None]


def _inner(plan: GpuCodecPlan) -> tuple[int, ...]:
    """Chunks per unit along each axis: the shard's inner-chunk grid, or ones when unsharded."""
    return plan.chunks_per_shard if plan.sharded else (1,) * len(plan.chunk_shape)


def encode_region_on_lane(lane: Lane, dataset: DatasetWrite, plan: GpuCodecPlan, region: Region) -> list[Encoded]:
    """Read one unit-aligned region, encode all its units on ``lane``; ``(coords, bytes | None)`` per unit.

    ``None`` means the unit holds only the fill value (and ``write_empty_chunks`` is off): its key is
    deleted, as zarr does. Nothing is stored here: see :func:`store_encoded`.
    """
    target = dataset.target
    device = lane.upload(dataset.source.read(region))
    units = tuple(math.ceil((r.stop - r.start) / u) for r, u in zip(region, target.unit_shape, strict=True))
    with lane.context():
        matrix = chunk_matrix(lane.xp, device, units, _inner(plan), plan.chunk_shape, plan.fill_value)
    return _encode_matrix(lane, target, plan, list(target.grid.units_overlapping(region)), matrix)


def encode_units_on_lane(
    lane: Lane, target: DatasetTarget, plan: GpuCodecPlan, units: Sequence[tuple[Coords, np.ndarray]]
) -> list[Encoded]:
    """Encode whole units already assembled on the host (sequential iterators) on ``lane``."""
    ones = (1,) * len(target.unit_shape)
    with lane.context():
        matrices = [
            chunk_matrix(lane.xp, lane.upload(data), ones, _inner(plan), plan.chunk_shape, plan.fill_value)
            for _, data in units
        ]
        matrix = matrices[0] if len(matrices) == 1 else lane.xp.concatenate(matrices)
    return _encode_matrix(lane, target, plan, [coords for coords, _ in units], matrix)


def _encode_matrix(
    lane: Lane, target: DatasetTarget, plan: GpuCodecPlan, coords: list[Coords], matrix
) -> list[Encoded]:
    """Skip all-fill chunks, encode the rest in one batch, assemble shards: one entry per unit."""
    n_units, per_unit, _ = matrix.shape
    rows = matrix.reshape(n_units * per_unit, -1)
    skip_empty = not write_empty_chunks(target.array)
    with lane.context():
        empty = fill_rows(lane.xp, rows, plan.fill_value) if skip_empty else np.zeros(len(rows), bool)
        if plan.shuffle_elementsize:  # numcodecs' byte shuffle, before the compressor, on the device
            rows = shuffle_rows(lane.xp, rows, plan.shuffle_elementsize)
    try:
        encoded = iter(encode_batched(lane, plan, rows, np.flatnonzero(~empty)))
    except Exception as exc:
        raise ChunkWriteError(target.name, coords[0] if coords else None, "encoding on the GPU", repr(exc)) from exc
    blobs = [None if e else next(encoded) for e in empty.tolist()]
    if plan.sharded:
        blobs = build_shards(blobs, plan.chunks_per_shard, plan.index_location, plan.index_crc32c)
    return list(zip(coords, blobs, strict=True))


def encode_batched(lane: Lane, plan: GpuCodecPlan, rows, indices: np.ndarray) -> list:
    """One encode call for the chosen rows; on device out-of-memory, retry in halves down to one chunk."""
    out: list = []
    step = max(1, len(indices))
    start = 0
    while start < len(indices):
        try:
            out.extend(lane.encode(plan, rows, indices[start : start + step]))
            start += step
        except lane.out_of_memory as exc:
            if step == 1:
                raise RuntimeError(
                    f"the GPU ran out of memory encoding a single chunk of {plan.chunk_nbytes} bytes; "
                    "use smaller chunks or engine='threads'"
                ) from exc
            step = max(1, step // 2)
            lane.free_memory()
            logger.info("GPU out of memory: retrying with batches of %d chunks", step)
    return out


def put_encoded(target: DatasetTarget, coords: Coords, blob: bytes | memoryview | None) -> None:
    """Store one encoded unit under its key (``None`` deletes it); errors name dataset, chunk and key."""
    target.sink.put(coords, blob)


def store_encoded(target: DatasetTarget, encoded: Sequence[Encoded]) -> int:
    """Store a task's encoded units in this thread, in one batch (:meth:`~..write.sink.ChunkSink.put_many`);
    returns how many."""
    target.sink.put_many(encoded)
    return len(encoded)
