"""The GPU engine: GPU lanes and CPU workers on one task queue, each dataset routed by chain and layout.

Several lanes (threads, each with its own CUDA stream and encoders) run the data path of
:mod:`.datapath` at once, so one tile's copies overlap another's compression, while a pool
of host writer threads stores the previous tiles. CPU worker threads encode with the
array's own zarr codecs from the same queue (:mod:`.shared_tasks`): the datasets routed to
them whole, and, unless ``gpu_cpu_helpers=0``, rows of the GPU-routed tasks the lanes will
reach last. A dataset goes to the CPU workers when nvCOMP cannot write its chain readably
for stock zarr (:func:`.plan.classify`) or when its frames are too large for the GPU to be
faster (:mod:`.routing`); every route says why in the write report.

All three pools are :class:`~..engines.pool.DaemonThreadPool`: a cancelled write (a
failure, Ctrl-C) waits a moment for running tasks and abandons one stuck in a read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..engines.base import CANCEL_GRACE_S, Engine, Route, Units, tile_bytes_for
from ..engines.pool import DaemonThreadPool
from ..options import WriteOptions
from ..write.dataset import DatasetWrite
from ..write.plan import Region
from ..write.target import DatasetTarget
from .datapath import Encoded, encode_region_on_lane, encode_units_on_lane, store_encoded
from .lanes import Lane, NvcompLane
from .plan import GpuCodecPlan, classify
from .routing import MAX_GPU_FRAME_BYTES, cpu_worker_count, layout_route
from .shared_tasks import SharedTask, TaskQueue, UnitTally
from .worker_lanes import ThreadLanes

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class GpuRoute(Route):
    """A dataset the lanes encode (its codec plan), shared with the CPU workers unless sharing is off."""

    plan: GpuCodecPlan | None = None
    units: UnitTally = field(default_factory=UnitTally)

    def describe(self) -> str:
        engine = self.engine
        shared = f" + {_workers(engine.cpu_workers)}" if engine.sharing else ""
        return f"gpu: {engine.lane_count} lanes{shared}"

    def detail(self) -> str:
        return self.units.describe()


@dataclass(eq=False)
class CpuRoute(Route):
    """A dataset the CPU workers write whole, with the array's zarr codecs."""

    def describe(self) -> str:
        return f"gpu: {_workers(self.engine.cpu_workers)}"


def _workers(n: int) -> str:
    return f"{n} CPU worker{'' if n == 1 else 's'}"


class GpuEngine(Engine):
    """Lanes encode on the GPU, a writer pool stores, CPU workers share the queue.

    ``cpu_helpers`` is ``gpu_cpu_helpers`` (:func:`.routing.cpu_worker_count`); frames larger
    than ``max_frame_bytes`` send a dataset to the CPU workers.
    """

    name = "gpu"

    def __init__(
        self,
        max_workers: int,
        batch_bytes: int,
        lanes: int = 4,
        lane_factory: Callable[[], Lane] = NvcompLane,
        cpu_helpers: int | None = None,
        max_frame_bytes: int = MAX_GPU_FRAME_BYTES,
    ) -> None:
        super().__init__(max_workers)
        self.batch_bytes = batch_bytes
        self.lane_count = lanes
        self.cpu_workers, self.sharing = cpu_worker_count(cpu_helpers, lanes)
        self.max_frame_bytes = max_frame_bytes
        self._lanes = ThreadLanes(lane_factory)
        self._tasks = TaskQueue()
        self._active_cpu = 0  # CPU worker loops running (guarded by the queue's lock)
        self._lane_pool: DaemonThreadPool | None = None
        self._cpu_pool: DaemonThreadPool | None = None
        self._store_pool: DaemonThreadPool | None = None

    @classmethod
    def create(cls, options: WriteOptions) -> GpuEngine:
        """The engine for ``engine="gpu"``; refuses clearly, before any write, without a usable GPU."""
        from .status import gpu_status

        status = gpu_status()
        if not status.available:
            raise RuntimeError(f"engine='gpu' needs a usable NVIDIA GPU with nvCOMP: {status.reason}")
        return cls(options.workers, options.gpu_batch_bytes, options.gpu_streams, cpu_helpers=options.gpu_cpu_helpers)

    def describe(self) -> str:
        cpu = "on one queue" if self.sharing else "for CPU-routed datasets only"
        return (
            f"gpu ({self.lane_count} streams, {self.cpu_workers} CPU workers {cpu}, {self.max_workers} writer threads)"
        )

    def tile_bytes(self, options: WriteOptions, dataset_nbytes: int) -> int:
        # one tile per lane in flight plus as many waiting to be stored, each at most one batch
        return tile_bytes_for(options.max_inflight_bytes, self.lane_count, dataset_nbytes, cap=self.batch_bytes)

    def route_tile_bytes(self, route: Route, options: WriteOptions, dataset_nbytes: int) -> int:
        if isinstance(route, CpuRoute):  # CPU workers take these tasks whole: sized as for engine='threads'
            return tile_bytes_for(options.max_inflight_bytes, self.cpu_workers, dataset_nbytes)
        return self.tile_bytes(options, dataset_nbytes)

    # -- set-up ---------------------------------------------------------------------
    def admit(self, dataset: DatasetWrite) -> Route:
        self._start_pools()
        plan = classify(dataset.target.array)
        if not plan:
            logger.warning("dataset '%s' is written by the CPU pool: %s", dataset.name, plan.reason)
            return CpuRoute(self, dataset).because(f"CPU workers instead of the GPU: {plan.reason}")
        on_gpu, why = layout_route(plan, self.max_frame_bytes)
        if not on_gpu:
            logger.info("dataset '%s' is written by the CPU workers: %s", dataset.name, why)
            return CpuRoute(self, dataset).because(f"CPU workers instead of the GPU: {why}")
        return GpuRoute(self, dataset, plan).because(why)

    def _start_pools(self) -> None:
        """The three pools; each starts its threads only as tasks arrive."""
        if self._lane_pool is None:
            self._lane_pool = DaemonThreadPool(self.lane_count, thread_name_prefix="hzp-gpu-lane")
            self._cpu_pool = DaemonThreadPool(self.cpu_workers, thread_name_prefix="hzp-gpu-cpu")
            self._store_pool = DaemonThreadPool(self.max_workers, thread_name_prefix="hzp-gpu-store")

    # -- tasks ----------------------------------------------------------------------
    def submit_region(self, route: Route, region: Region) -> Future[int]:
        return self._enqueue(self._task(route, region=region))

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        return self._enqueue(self._task(route, units=list(units)))

    def _task(self, route: Route, **part) -> SharedTask:
        if isinstance(route, GpuRoute):
            return SharedTask(route.dataset, plan=route.plan, tally=route.units, **part)
        return SharedTask(route.dataset, cpu_only=True, **part)

    def _enqueue(self, task: SharedTask) -> Future[int]:
        """Queue a task; a lane job for a GPU-routed one, and a CPU worker where one may take it."""
        self._tasks.put(task)
        if not task.cpu_only:
            self._lane_pool.submit(self._lane_job)
        if task.cpu_only or self.sharing:
            with self._tasks.lock:
                start = self._active_cpu < self.cpu_workers
                self._active_cpu += start
            if start:
                self._cpu_pool.submit(self._cpu_job)
        return task.done

    def _lane_job(self) -> None:
        """Encode the oldest GPU-routed task on this thread's lane, then hand it to the store pool."""
        task = self._tasks.take_oldest()
        if task is None:
            return  # CPU workers took all of it
        try:
            with self._lanes.use() as lane:
                if task.region is not None:
                    encoded = encode_region_on_lane(lane, task.dataset, task.plan, task.region)
                else:
                    encoded = encode_units_on_lane(lane, task.dataset.target, task.plan, task.units)
            if task.tally is not None:
                task.tally.add(lanes=len(encoded))
            self._store(task.dataset.target, encoded, task.part_done)
        except BaseException as exc:  # the task fails (a store already handed over may still end)
            task.part_done(exc)

    def _cpu_job(self) -> None:
        """Encode with the CPU codecs what the queue gives a CPU worker, until it gives nothing."""
        while True:
            with self._tasks.lock:
                piece = self._tasks.take_for_cpu(self.sharing)
                if piece is None:
                    self._active_cpu -= 1
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
        """Lanes first (they hand work to the store pool), then CPU workers, then stores. Cancelled,
        the pools share :data:`CANCEL_GRACE_S`, and threads still stuck after it are abandoned."""
        if cancel:
            self._tasks.cancel_all()
        deadline = time.monotonic() + CANCEL_GRACE_S
        stuck: list[str] = []
        for pool in (self._lane_pool, self._cpu_pool, self._store_pool):
            if pool is not None:
                timeout = max(0.0, deadline - time.monotonic()) if cancel else None
                stuck += pool.shutdown(wait=True, cancel_futures=cancel, timeout=timeout)
        self._lane_pool = self._cpu_pool = self._store_pool = None
        self._lanes.close()
        if stuck:
            logger.warning(
                "%d GPU engine thread(s) still busy %.0f s after the write was stopped (a read that does not "
                "return?) were left behind: they store nothing more and do not keep the process alive",
                len(stuck),
                CANCEL_GRACE_S,
            )
