"""Tasks that GPU lanes and CPU helper threads share: lanes take whole tasks, oldest first;
helpers shave single unit-rows off the newest ones.

On a machine with a GPU, most CPU cores sit idle while the lanes encode. Helpers put them
to work on the same datasets without slowing the lanes down at the end of a write: a helper
only ever takes one unit-row (one row of chunks or shards along the first axis) of the task
the lanes will reach last, and it never takes a task's last row, so the lanes' batches stay
whole and the tail a helper can add is one row's CPU encode.
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
from .plan import GpuCodecPlan

Units = list[tuple[Coords, np.ndarray]]


class SharedTask:
    """One region of a random-access dataset, or one batch of assembled units, its codec plan, and its future.

    ``done`` ends when every part has been stored: the part a lane takes and each row a
    helper shaved off. The first error of any part ends it with that error.
    """

    def __init__(
        self,
        dataset: DatasetWrite,
        region: Region | None = None,
        units: Units | None = None,
        plan: GpuCodecPlan | None = None,
    ) -> None:
        if (region is None) == (units is None):
            raise ValueError("a task is either a region or a list of units")
        self.dataset = dataset
        self.plan = plan  # what a lane encodes it with
        self.region = region
        self.units = units
        self.nbytes = dataset.target.region_nbytes(region) if region is not None else sum(d.nbytes for _, d in units)
        self.done: Future[int] = Future()
        self._parts = 1  # the part a lane will take
        self._lock = threading.Lock()

    def shave(self) -> Callable[[], object] | None:
        """Cut off the last unit-row (or, for units, the last unit) as CPU work; ``None`` when one is left."""
        if self.units is not None:
            if len(self.units) < 2:
                return None
            last = [self.units.pop()]
            self._add_part()
            return lambda: self.dataset.target.write_units(last)
        first, rest = self.region[0], self.region[1:]
        unit = self.dataset.target.unit_shape[0]
        rows = math.ceil((first.stop - first.start) / unit)
        if rows < 2:
            return None
        cut = first.start + (rows - 1) * unit
        tail = (slice(cut, first.stop), *rest)
        self.region = (slice(first.start, cut), *rest)
        self._add_part()
        return lambda: self.dataset.write_region(tail)

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
    """The tasks no lane has taken yet."""

    def __init__(self) -> None:
        self._tasks: deque[SharedTask] = deque()
        self.lock = threading.Lock()

    def put(self, task: SharedTask) -> None:
        with self.lock:
            self._tasks.append(task)

    def take_oldest(self) -> SharedTask | None:
        """For a lane: the task queued first, whole (what is left of it)."""
        with self.lock:
            return self._tasks.popleft() if self._tasks else None

    def shave_newest(self) -> tuple[SharedTask, Callable[[], object]] | None:
        """For a helper: one unit-row of the newest task that has more than one row left.

        The caller holds :attr:`lock`, so that deciding there is no work and stopping is one step."""
        for task in reversed(self._tasks):
            work = task.shave()
            if work is not None:
                return task, work
        return None

    def cancel_all(self) -> None:
        """Drop every queued task, cancelling its future."""
        with self.lock:
            tasks, self._tasks = list(self._tasks), deque()
        for task in tasks:
            task.done.cancel()
