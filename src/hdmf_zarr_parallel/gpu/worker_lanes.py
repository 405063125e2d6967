"""GPU lanes owned by worker threads: one per thread, made on first use, closed when a write ends.

:class:`ThreadLanes` is the life cycle both engines give their lanes: the GPU engine's lane
threads, and every thread of a Dask worker process. A lane is made by the factory the first
time a thread asks for one and kept for that thread's next tasks; :meth:`ThreadLanes.close`
closes every idle lane at once and marks the busy ones, which close when their task lets go.

On a Dask worker, the lanes of each lane factory form one :class:`ThreadLanes`, kept by this
module for the worker process (:func:`drop_lanes` closes them all at the end of a write). A
task of a GPU-capable dataset carries a :class:`WorkerGpu`: the codec plan, the pickled
lane factory, and whether to use the GPU only where the worker sees one (``"auto"``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..write.dataset import DatasetWrite
from ..write.plan import Coords, Region
from ..write.target import DatasetTarget
from .datapath import encode_region_on_lane, encode_units_on_lane, store_encoded
from .lanes import Lane
from .plan import GpuCodecPlan, Unsupported, classify

logger = logging.getLogger(__name__)

__all__ = ["ThreadLanes", "WorkerGpu", "drop_lanes", "pickled_factory"]


class ThreadLanes:
    """One lane per thread from ``factory``, tracked so that :meth:`close` releases them all."""

    def __init__(self, factory: Callable[[], Lane]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._open: dict[int, Lane] = {}  # id -> lane, every lane made and not closed yet
        self._busy: set[int] = set()  # lanes a task is using right now
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self) -> Iterator[Lane]:
        """This thread's lane, made on first use; one closed meanwhile is replaced, one marked
        by :meth:`close` while in use is closed when the ``with`` block ends."""
        lane = getattr(self._local, "lane", None)
        with self._lock:
            if lane is not None and id(lane) not in self._open:
                lane = None  # closed since this thread last used it
        if lane is None:
            lane = self._local.lane = self._factory()
            with self._lock:
                self._open[id(lane)] = lane
        with self._lock:
            self._busy.add(id(lane))
        try:
            yield lane
        finally:
            with self._lock:
                self._busy.discard(id(lane))
                dropped = id(lane) not in self._open
            if dropped:
                self._local.lane = None
                lane.close()

    def close(self) -> int:
        """Close every idle lane and mark the busy ones to close after use; returns how many closed now."""
        with self._lock:
            idle = [lane for key, lane in self._open.items() if key not in self._busy]
            self._open.clear()
        for lane in idle:
            try:
                lane.close()
            except Exception:  # a failing close must not stop the others, nor the write's tear-down
                logger.warning("closing a GPU lane failed", exc_info=True)
        return len(idle)


def pickled_factory(gpu_lane: Callable[[], Lane] | None) -> bytes:
    """The lane factory as it travels to Dask workers (default: :class:`~.lanes.NvcompLane`)."""
    from distributed.protocol.pickle import dumps

    if gpu_lane is None:
        from .lanes import NvcompLane

        gpu_lane = NvcompLane
    if not callable(gpu_lane):
        raise TypeError(f"gpu_lane must be a callable that returns a Lane, got {type(gpu_lane).__name__}")
    try:
        return dumps(gpu_lane)
    except Exception as exc:
        raise TypeError(f"gpu_lane must pickle to reach the Dask workers: {exc!r}") from exc


# -- on the Dask workers: one set of lanes per lane factory, for the whole worker process ----------
_WORKER_LANES: dict[bytes, ThreadLanes] = {}
_WORKER_LOCK = threading.Lock()


def _worker_lanes(factory_bytes: bytes) -> ThreadLanes:
    with _WORKER_LOCK:
        lanes = _WORKER_LANES.get(factory_bytes)
    if lanes is None:
        from distributed.protocol.pickle import loads

        lanes = ThreadLanes(_explained(loads(factory_bytes)))
        with _WORKER_LOCK:
            lanes = _WORKER_LANES.setdefault(factory_bytes, lanes)  # another thread may have been first
    return lanes


def _explained(factory: Callable[[], Lane]) -> Callable[[], Lane]:
    """``factory``, whose failure says that this worker cannot start a lane, and why."""

    def start() -> Lane:
        try:
            return factory()
        except Exception as exc:
            from .status import gpu_status

            name = getattr(factory, "__name__", None) or type(factory).__name__
            raise RuntimeError(
                f"this Dask worker cannot start a GPU lane ({name}: {exc!r}; GPU status: {gpu_status().reason}); "
                "use gpu='auto' to let such workers encode with the CPU codecs"
            ) from exc

    return start


def drop_lanes() -> int:
    """Close every idle lane of this worker process and mark the busy ones to close after use."""
    with _WORKER_LOCK:
        sets = list(_WORKER_LANES.values())
        _WORKER_LANES.clear()
    return sum(lanes.close() for lanes in sets)


@dataclass(frozen=True)
class WorkerGpu:
    """What a Dask task of a GPU-capable dataset needs to encode on its worker's GPU."""

    #: ``"auto"``: only where the worker process sees a usable GPU; ``"always"``: everywhere
    mode: str
    #: the pickled zero-argument callable that makes a lane (:func:`pickled_factory`)
    lane_factory: bytes
    plan: GpuCodecPlan

    @classmethod
    def for_dataset(cls, target: DatasetTarget, mode: str, lane_factory: bytes) -> WorkerGpu | Unsupported:
        """The GPU part of a dataset's tasks, or why its chain cannot be written on the GPU."""
        plan = classify(target.array)
        return cls(mode, lane_factory, plan) if plan else plan

    def here(self) -> bool:
        """Whether this task encodes on a GPU lane here (``"auto"``: the GPU status is probed once per process)."""
        if self.mode == "always":
            return True
        from .status import gpu_status

        return gpu_status().available

    def write_region(self, dataset: DatasetWrite, region: Region) -> int:
        """Read, encode on this thread's lane, store: one region task."""
        with _worker_lanes(self.lane_factory).use() as lane:
            encoded = encode_region_on_lane(lane, dataset, self.plan, region)
        store_encoded(dataset.target, encoded)
        return dataset.target.region_nbytes(region)

    def write_units(self, target: DatasetTarget, units: Sequence[tuple[Coords, np.ndarray]]) -> int:
        """Encode assembled units on this thread's lane, store them: one units task."""
        with _worker_lanes(self.lane_factory).use() as lane:
            encoded = encode_units_on_lane(lane, target, self.plan, units)
        store_encoded(target, encoded)
        return sum(data.nbytes for _, data in units)
