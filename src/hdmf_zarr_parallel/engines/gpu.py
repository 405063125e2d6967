"""The GPU engine: batches of chunks compressed with nvCOMP on CUDA streams, stored by host threads.

Per task (one unit-aligned tile of a dataset, about ``gpu_batch_bytes``):

  read (host, iterator) → upload (pinned staging, async H2D) → carve and pad chunks on
  the device → skip all-fill chunks → byte shuffle (when the chain has one) → ONE batched
  nvCOMP encode → D2H of the compressed bytes → assemble shards on the host → store by a
  pool of host writer threads.

Several lanes (threads, each with its own CUDA stream and encoders) run at once, so one
tile's copies overlap another's compression, while the writer pool stores the previous
tiles. Datasets whose codec chain nvCOMP cannot produce readably for stock zarr (blosc,
shuffle, strings, …) go to a CPU thread pool, and the reason is logged once per dataset.

The data path itself is plain synchronous functions, shared with the Dask engine's GPU
workers: :func:`encode_region_on_lane` / :func:`encode_units_on_lane` (upload, carve,
fill check, batched encode with out-of-memory halving, shard assembly) and
:func:`store_encoded` / :func:`put_encoded`. This engine only adds the scheduling
(lane threads, a store pool, futures).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from zarr.core.buffer import default_buffer_prototype

from ..codecs.gpu_plan import GpuCodecPlan, classify
from ..codecs.shard import build_shard
from ..codecs.shuffle import shuffle_rows
from ..dataset import DatasetWriter
from ..errors import ChunkWriteError
from ..options import WriteOptions
from ..plan import Coords, Region
from .base import Engine, tile_bytes_for
from .gpu_lanes import Lane, NvcompLane, chunk_matrix, fill_rows
from .shared_tasks import SharedTask, TaskQueue
from .threads import ThreadEngine

logger = logging.getLogger(__name__)

Encoded = tuple[Coords, bytes | memoryview | None]


def _inner(plan: GpuCodecPlan) -> tuple[int, ...]:
    """Chunks per unit along each axis: the shard's inner-chunk grid, or ones when unsharded."""
    return plan.chunks_per_shard if plan.sharded else (1,) * len(plan.chunk_shape)


# -- the GPU data path: synchronous, usable from any thread or process ------------------------------
def encode_region_on_lane(lane: Lane, writer: DatasetWriter, plan: GpuCodecPlan, region: Region) -> list[Encoded]:
    """Read one unit-aligned region, encode all its units on ``lane``; ``(coords, bytes | None)`` per unit.

    ``None`` means the unit holds only the fill value (and ``write_empty_chunks`` is off): its key is
    deleted, as zarr does. Nothing is stored here: see :func:`store_encoded`.
    """
    device = lane.upload(writer.read(region))
    units = tuple(math.ceil((r.stop - r.start) / u) for r, u in zip(region, writer.unit_shape, strict=True))
    with lane.context():
        matrix = chunk_matrix(lane.xp, device, units, _inner(plan), plan.chunk_shape, plan.fill_value)
    return _encode_matrix(lane, writer, plan, list(writer.grid.units_overlapping(region)), matrix)


def encode_units_on_lane(
    lane: Lane, writer: DatasetWriter, plan: GpuCodecPlan, units: Sequence[tuple[Coords, np.ndarray]]
) -> list[Encoded]:
    """Encode whole units already assembled on the host (sequential iterators) on ``lane``."""
    ones = (1,) * len(writer.unit_shape)
    with lane.context():
        matrices = [
            chunk_matrix(lane.xp, lane.upload(data), ones, _inner(plan), plan.chunk_shape, plan.fill_value)
            for _, data in units
        ]
        matrix = matrices[0] if len(matrices) == 1 else lane.xp.concatenate(matrices)
    return _encode_matrix(lane, writer, plan, [coords for coords, _ in units], matrix)


def _encode_matrix(
    lane: Lane, writer: DatasetWriter, plan: GpuCodecPlan, coords: list[Coords], matrix
) -> list[Encoded]:
    """Skip all-fill chunks, encode the rest in one batch, assemble shards: one entry per unit."""
    n_units, per_unit, _ = matrix.shape
    rows = matrix.reshape(n_units * per_unit, -1)
    skip_empty = not writer.array._async_array.config.write_empty_chunks
    with lane.context():
        empty = fill_rows(lane.xp, rows, plan.fill_value) if skip_empty else np.zeros(len(rows), bool)
        if plan.shuffle_elementsize:  # numcodecs' byte shuffle, before the compressor, on the device
            rows = shuffle_rows(lane.xp, rows, plan.shuffle_elementsize)
    try:
        encoded = iter(encode_batched(lane, plan, rows, np.flatnonzero(~empty)))
    except Exception as exc:
        raise ChunkWriteError(writer.name, coords[0] if coords else None, "encoding on the GPU", repr(exc)) from exc
    blobs = [None if e else next(encoded) for e in empty]
    out: list[Encoded] = []
    for i, unit in enumerate(coords):
        parts = blobs[i * per_unit : (i + 1) * per_unit]
        if plan.sharded:
            out.append((unit, build_shard(parts, plan.chunks_per_shard, plan.index_location, plan.index_crc32c)))
        else:
            out.append((unit, parts[0]))
    return out


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


def put_encoded(writer: DatasetWriter, coords: Coords, blob: bytes | memoryview | None) -> None:
    """Store one encoded unit under its key (``None`` deletes it); errors name dataset, chunk and key."""
    buffer = None if blob is None else default_buffer_prototype().buffer.from_bytes(blob)
    try:
        writer.sink.put(coords, buffer)
    except Exception as exc:
        raise ChunkWriteError(writer.name, coords, f"storing key '{writer.sink.key(coords)}'", repr(exc)) from exc


def store_encoded(writer: DatasetWriter, encoded: Sequence[Encoded]) -> int:
    """Store encoded units one after the other in this thread; returns how many."""
    for coords, blob in encoded:
        put_encoded(writer, coords, blob)
    return len(encoded)


class GpuEngine(Engine):
    """Lanes encode on the GPU; a writer pool stores; optional CPU helpers share the work.

    ``cpu_helpers`` threads encode with the CPU codecs, one unit-row at a time, from the
    tasks the lanes will reach last (see :mod:`.shared_tasks`), so cores the lanes leave
    idle add throughput without lengthening the write's tail.
    """

    name = "gpu"

    def __init__(
        self,
        max_workers: int,
        batch_bytes: int,
        lanes: int = 4,
        lane_factory: Callable[[], Lane] = NvcompLane,
        cpu_helpers: int = 0,
    ) -> None:
        super().__init__(max_workers)
        self.batch_bytes = batch_bytes
        self.lane_count = lanes
        self.cpu_helpers = cpu_helpers
        self._lane_factory = lane_factory
        self._cpu = ThreadEngine(max_workers)
        self._plans: dict[int, tuple[DatasetWriter, GpuCodecPlan]] = {}
        self._local = threading.local()
        self._open_lanes: list[Lane] = []
        self._lanes_lock = threading.Lock()
        self._tasks = TaskQueue()
        self._active_helpers = 0
        self._lane_pool: ThreadPoolExecutor | None = None
        self._store_pool: ThreadPoolExecutor | None = None
        self._helper_pool: ThreadPoolExecutor | None = None

    @classmethod
    def create(cls, options: WriteOptions) -> GpuEngine:
        """The engine for ``engine="gpu"``; refuses clearly, before any write, without a usable GPU."""
        from ..gpu_support import gpu_status

        status = gpu_status()
        if not status.available:
            raise RuntimeError(f"engine='gpu' needs a usable NVIDIA GPU with nvCOMP: {status.reason}")
        return cls(options.workers, options.gpu_batch_bytes, options.gpu_streams, cpu_helpers=options.gpu_cpu_helpers)

    def describe(self) -> str:
        helpers = f", {self.cpu_helpers} CPU helpers" if self.cpu_helpers else ""
        return f"gpu ({self.lane_count} streams, {self.max_workers} writer threads{helpers})"

    def tile_bytes(self, options: WriteOptions, dataset_nbytes: int) -> int:
        # one tile per lane in flight plus as many waiting to be stored, each at most one batch
        return tile_bytes_for(options.max_inflight_bytes, self.lane_count, dataset_nbytes, cap=self.batch_bytes)

    # -- set-up ---------------------------------------------------------------------
    def admit(self, writer: DatasetWriter) -> None:
        plan = classify(writer.array)
        if not plan:
            logger.warning("dataset '%s' is written by the CPU pool: %s", writer.name, plan.reason)
            return
        self._plans[id(writer)] = (writer, plan)  # the writer kept alive: its id cannot be reused meanwhile
        if self._lane_pool is None:
            self._lane_pool = ThreadPoolExecutor(self.lane_count, thread_name_prefix="hzp-gpu-lane")
            self._store_pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="hzp-gpu-store")
            if self.cpu_helpers:
                self._helper_pool = ThreadPoolExecutor(self.cpu_helpers, thread_name_prefix="hzp-gpu-helper")

    def _plan_of(self, writer: DatasetWriter) -> GpuCodecPlan | None:
        entry = self._plans.get(id(writer))
        return entry[1] if entry is not None and entry[0] is writer else None

    def _lane(self) -> Lane:
        lane = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = self._lane_factory()
            with self._lanes_lock:
                self._open_lanes.append(lane)
        return lane

    # -- tasks ----------------------------------------------------------------------
    def submit_region(self, writer: DatasetWriter, region: Region) -> Future[int]:
        if self._plan_of(writer) is None:
            return self._cpu.submit_region(writer, region)
        return self._enqueue(SharedTask(writer, region=region))

    def submit_units(self, writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> Future[int]:
        if self._plan_of(writer) is None:
            return self._cpu.submit_units(writer, units)
        return self._enqueue(SharedTask(writer, units=list(units)))

    def _enqueue(self, task: SharedTask) -> Future[int]:
        """Queue a task; one lane job per task takes the oldest one, helpers shave the newest."""
        self._tasks.put(task)
        self._lane_pool.submit(self._lane_job)
        if self._helper_pool is not None:
            with self._tasks.lock:
                start = self._active_helpers < self.cpu_helpers
                self._active_helpers += start
            if start:
                self._helper_pool.submit(self._helper_job)
        return task.done

    def _lane_job(self) -> None:
        """Encode the oldest queued task on this thread's lane, then hand it to the store pool."""
        task = self._tasks.take_oldest()
        if task is None:
            return  # helpers took all of it
        plan = self._plan_of(task.writer)
        try:
            lane = self._lane()
            if task.region is not None:
                encoded = encode_region_on_lane(lane, task.writer, plan, task.region)
            else:
                encoded = encode_units_on_lane(lane, task.writer, plan, task.units)
            self._store(task.writer, encoded, task.part_done)
        except BaseException as exc:  # the task fails (a store already handed over may still end)
            task.part_done(exc)

    def _helper_job(self) -> None:
        """Encode unit-rows of the newest tasks with the CPU codecs until none is left to shave."""
        while True:
            with self._tasks.lock:
                piece = self._tasks.shave_newest()
                if piece is None:
                    self._active_helpers -= 1
                    return
            task, work = piece
            try:
                work()
            except BaseException as exc:
                task.part_done(exc)
            else:
                task.part_done()

    # -- store ------------------------------------------------------------------------
    def _store(self, writer: DatasetWriter, encoded: list[Encoded], finished: Callable) -> None:
        """Hand each unit to the store pool (:func:`put_encoded`); ``finished(error)`` once, after the last."""
        pending = [len(encoded)]
        lock = threading.Lock()

        def stored(f: Future) -> None:
            error = f.exception() if not f.cancelled() else RuntimeError("store cancelled")
            with lock:
                pending[0] -= 1
                if pending[0] < 0:
                    return  # already reported
                if error is not None:
                    pending[0] = -1
                elif pending[0] > 0:
                    return
            finished(error)

        if not encoded:
            finished(None)
        for coords, blob in encoded:
            self._store_pool.submit(put_encoded, writer, coords, blob).add_done_callback(stored)

    # -- tear-down ----------------------------------------------------------------------
    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._tasks.cancel_all()
        for pool in (self._lane_pool, self._helper_pool, self._store_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=cancel)
        self._lane_pool = self._helper_pool = self._store_pool = None
        self._cpu.shutdown(cancel)
        with self._lanes_lock:
            lanes, self._open_lanes = self._open_lanes, []
        for lane in lanes:
            lane.close()
        self._local = threading.local()
        self._plans.clear()
