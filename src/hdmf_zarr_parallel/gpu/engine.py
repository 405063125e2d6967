"""The GPU engine: batches of chunks compressed with nvCOMP on CUDA streams, stored by host threads.

Several lanes (threads, each with its own CUDA stream and encoders) run the data path of
:mod:`.datapath` at once, so one tile's copies overlap another's compression, while a pool
of host writer threads stores the previous tiles. Datasets whose codec chain nvCOMP cannot
produce readably for stock zarr (blosc, strings, ...; see :func:`.plan.classify`) go to a
CPU thread pool, and the reason is logged once per dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..engines.base import Engine, Route, Units, tile_bytes_for
from ..engines.threads import ThreadEngine
from ..options import WriteOptions
from ..write.dataset import DatasetWrite
from ..write.plan import Region
from ..write.target import DatasetTarget
from .datapath import Encoded, encode_region_on_lane, encode_units_on_lane, store_encoded
from .lanes import Lane, NvcompLane
from .plan import GpuCodecPlan, classify
from .shared_tasks import SharedTask, TaskQueue
from .worker_lanes import ThreadLanes

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class GpuRoute(Route):
    """A dataset the lanes encode: its codec plan."""

    plan: GpuCodecPlan | None = None


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
        self._lanes = ThreadLanes(lane_factory)
        self._cpu = ThreadEngine(max_workers)  # the route of the datasets nvCOMP cannot encode readably
        self._tasks = TaskQueue()
        self._active_helpers = 0
        self._lane_pool: ThreadPoolExecutor | None = None
        self._store_pool: ThreadPoolExecutor | None = None
        self._helper_pool: ThreadPoolExecutor | None = None

    @classmethod
    def create(cls, options: WriteOptions) -> GpuEngine:
        """The engine for ``engine="gpu"``; refuses clearly, before any write, without a usable GPU."""
        from .status import gpu_status

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
    def admit(self, dataset: DatasetWrite) -> Route:
        plan = classify(dataset.target.array)
        if not plan:
            logger.warning("dataset '%s' is written by the CPU pool: %s", dataset.name, plan.reason)
            return self._cpu.admit(dataset).because(f"CPU pool instead of the GPU: {plan.reason}")
        if self._lane_pool is None:
            self._lane_pool = ThreadPoolExecutor(self.lane_count, thread_name_prefix="hzp-gpu-lane")
            self._store_pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="hzp-gpu-store")
            if self.cpu_helpers:
                self._helper_pool = ThreadPoolExecutor(self.cpu_helpers, thread_name_prefix="hzp-gpu-helper")
        return GpuRoute(self, dataset, plan)

    # -- tasks ----------------------------------------------------------------------
    def submit_region(self, route: GpuRoute, region: Region) -> Future[int]:
        return self._enqueue(SharedTask(route.dataset, region=region, plan=route.plan))

    def submit_units(self, route: GpuRoute, units: Units) -> Future[int]:
        return self._enqueue(SharedTask(route.dataset, units=list(units), plan=route.plan))

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
        try:
            with self._lanes.use() as lane:
                if task.region is not None:
                    encoded = encode_region_on_lane(lane, task.dataset, task.plan, task.region)
                else:
                    encoded = encode_units_on_lane(lane, task.dataset.target, task.plan, task.units)
            self._store(task.dataset.target, encoded, task.part_done)
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
    def _store(self, target: DatasetTarget, encoded: list[Encoded], finished: Callable) -> None:
        """Hand the task's units to the store pool as one job (:func:`store_encoded`); ``finished(error)`` after it."""

        def stored(f: Future) -> None:
            finished(f.exception() if not f.cancelled() else RuntimeError("store cancelled"))

        self._store_pool.submit(store_encoded, target, encoded).add_done_callback(stored)

    # -- tear-down ----------------------------------------------------------------------
    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._tasks.cancel_all()
        for pool in (self._lane_pool, self._helper_pool, self._store_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=cancel)
        self._lane_pool = self._helper_pool = self._store_pool = None
        self._cpu.shutdown(cancel)
        self._lanes.close()
