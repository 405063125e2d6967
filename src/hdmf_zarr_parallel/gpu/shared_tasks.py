"""The one queue the GPU engine's lanes and CPU workers share, and its tasks.

Every task of a write waits here until a lane or a CPU worker takes it, under one lock, so
no unit is ever done twice or lost:

* a lane takes the oldest GPU-routed task whole (what is left of it), so its batches stay large;
* a CPU worker takes the oldest CPU-routed task whole (datasets the GPU cannot write, or
  writes slowly: nobody else will); otherwise, when the queue is shared, it works from the
  newest end of the GPU-routed tasks: it shaves one unit-row (one row of chunks or shards
  along the first axis) off the newest task with more than one row, and takes a single-row
  task whole only when no row is left to shave.

So the lanes and the CPU workers divide the GPU-routed work by their relative speed, and a
CPU worker can add at most one row's CPU encode to the end of a write.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

import numpy as np

from ..write.dataset import DatasetWrite
from ..write.plan import Coords, Region
from ..write.target import BLOCK_BYTES
from .plan import GpuCodecPlan

Units = list[tuple[Coords, np.ndarray]]
Work = Callable[[], object]


class UnitTally:
    """How many units of one dataset the lanes and the CPU workers encoded (for the write report)."""

    def __init__(self) -> None:
        self.lanes = 0
        self.cpu = 0
        self._lock = threading.Lock()

    def add(self, lanes: int = 0, cpu: int = 0) -> None:
        with self._lock:
            self.lanes += lanes
            self.cpu += cpu

    def describe(self) -> str:
        return f"units encoded: {self.lanes} by GPU lanes, {self.cpu} by CPU workers"


class SharedTask:
    """One region of a random-access dataset, or one batch of assembled units, and its future.

    ``cpu_only`` tasks belong to CPU-routed datasets: no lane takes them. ``done`` ends when
    every part has been stored: the part taken whole and each piece shaved off. The first error
    of any part ends it with that error. A piece shaved off is at most ``shave_bytes`` (at
    least one unit-row, or one unit).
    """

    def __init__(
        self,
        dataset: DatasetWrite,
        region: Region | None = None,
        units: Units | None = None,
        plan: GpuCodecPlan | None = None,
        cpu_only: bool = False,
        tally: UnitTally | None = None,
        shave_bytes: int = BLOCK_BYTES,
    ) -> None:
        if (region is None) == (units is None):
            raise ValueError("a task is either a region or a list of units")
        self.dataset = dataset
        self.plan = plan  # what a lane encodes it with
        self.cpu_only = cpu_only
        self.tally = tally
        self.shave_bytes = shave_bytes
        self.region = region
        self.units = units
        self.nbytes = dataset.target.region_nbytes(region) if region is not None else sum(d.nbytes for _, d in units)
        self.done: Future[int] = Future()
        self._parts = 1  # the part taken whole, by a lane or a CPU worker
        self._lock = threading.Lock()

    def rows(self) -> int:
        """Unit-rows left (units, for a task of assembled units)."""
        if self.units is not None:
            return len(self.units)
        first = self.region[0]
        return math.ceil((first.stop - first.start) / self.dataset.target.unit_shape[0])

    def shave(self) -> Work | None:
        """Cut off the last unit-rows (for units, the last units), up to :attr:`shave_bytes` and
        never the first, as CPU work; ``None`` when one is left."""
        rows = self.rows()
        if rows < 2:
            return None
        self._add_part()
        if self.units is not None:
            taken = [self.units.pop()]
            nbytes = taken[0][1].nbytes
            while len(self.units) > 1 and nbytes + self.units[-1][1].nbytes <= self.shave_bytes:
                taken.append(self.units.pop())
                nbytes += taken[-1][1].nbytes
            return self._cpu_work(units=taken[::-1])
        first, rest = self.region[0], self.region[1:]
        unit_rows = self.dataset.target.unit_shape[0]
        row_nbytes = max(1, self.dataset.target.region_nbytes((slice(first.start, first.start + unit_rows), *rest)))
        count = min(rows - 1, max(1, self.shave_bytes // row_nbytes))
        cut = first.start + (rows - count) * unit_rows
        tail = (slice(cut, first.stop), *rest)
        self.region = (slice(first.start, cut), *rest)
        return self._cpu_work(region=tail)

    def whole(self) -> Work:
        """All that is left of the task, as CPU work (the part a lane would have taken)."""
        return self._cpu_work(region=self.region, units=self.units)

    def _cpu_work(self, region: Region | None = None, units: Units | None = None) -> Work:
        """Read (for a region), encode with the array's zarr codecs and store, in the calling thread."""

        def work() -> int:
            if region is not None:
                nbytes = self.dataset.write_region(region)
                count = len(list(self.dataset.target.grid.units_overlapping(region)))
            else:
                nbytes = self.dataset.target.write_units(units)
                count = len(units)
            if self.tally is not None:
                self.tally.add(cpu=count)
            return nbytes

        return work

    def _add_part(self) -> None:
        with self._lock:
            self._parts += 1

    def part_done(self, error: BaseException | None = None) -> None:
        """One part is stored (or failed with ``error``)."""
        with self._lock:
            self._parts -= 1
            finished = self._parts == 0
        try:
            if error is not None:
                self.done.set_exception(error)
            elif finished:
                self.done.set_result(self.nbytes)
        except InvalidStateError:
            pass  # an earlier part failed, or the task was cancelled


class TaskQueue:
    """The tasks nobody has taken yet: GPU-routed ones (for lanes, shared with CPU workers) and CPU-routed ones."""

    def __init__(self) -> None:
        self._gpu: deque[SharedTask] = deque()
        self._cpu: deque[SharedTask] = deque()
        self.lock = threading.Lock()

    def put(self, task: SharedTask) -> None:
        with self.lock:
            (self._cpu if task.cpu_only else self._gpu).append(task)

    def take_oldest(self) -> SharedTask | None:
        """For a lane: the GPU-routed task queued first, whole (what is left of it)."""
        with self.lock:
            return self._gpu.popleft() if self._gpu else None

    def take_for_cpu(self, share: bool) -> tuple[SharedTask, Work] | None:
        """For a CPU worker: the oldest CPU-routed task whole; else, when ``share``, a row of the newest
        GPU-routed task (:meth:`shave_newest`), or the newest single-row one whole.

        The caller holds :attr:`lock`, so that deciding there is no work and stopping is one step."""
        if self._cpu:
            task = self._cpu.popleft()
            return task, task.whole()
        if not share:
            return None
        piece = self.shave_newest()
        if piece is None and self._gpu:  # every task left is one row: the lanes have not reached the newest
            task = self._gpu.pop()
            piece = task, task.whole()
        return piece

    def shave_newest(self) -> tuple[SharedTask, Work] | None:
        """One unit-row of the newest GPU-routed task that has more than one row left (caller holds :attr:`lock`)."""
        for task in reversed(self._gpu):
            work = task.shave()
            if work is not None:
                return task, work
        return None

    def cancel_all(self) -> None:
        """Drop every queued task, cancelling its future."""
        with self.lock:
            tasks = [*self._gpu, *self._cpu]
            self._gpu, self._cpu = deque(), deque()
        for task in tasks:
            task.done.cancel()
