"""Sequential datasets: one feeder thread each reads its iterator in order and assembles whole units.

A ``DataChunkIterator`` cannot be split, so its feeder takes its buffers one after another
(:meth:`~.source.DatasetSource.coalesced_buffers`), stages the units they touch
(:mod:`.assemble`) under the byte budget, and submits complete units in batches of about one
region task, so that one large buffer still becomes several tasks that workers share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..engines.base import Route
from ..errors import ChunkWriteError
from .assemble import peak_open_units
from .budget import InflightLimitError, Stager, WriteCancelled
from .dataset import DatasetWrite
from .plan import Coords, Region, UnitGrid, region_size
from .source import COALESCE_BYTES, coalesced

if TYPE_CHECKING:
    from .pipeline import PipelineRun


def staging_claim(dataset: DatasetWrite) -> int:
    """The most bytes a sequential dataset will hold staged at once, where its iterator's buffer
    pattern is known before reading (``peak_open_units``); 0 where it is not."""
    pattern = dataset.source.buffer_pattern
    if pattern is None:
        return 0
    target, bounds = dataset.target, dataset.bounds
    row_nbytes = math.prod(target.shape[1:]) * target.dtype.itemsize
    pattern = coalesced(pattern, target.unit_shape[0], bounds[0], row_nbytes, COALESCE_BYTES)
    return (peak_open_units(target.unit_shape, bounds, pattern) or 0) * dataset.assembler().staging_nbytes


def feed(run: PipelineRun, route: Route) -> None:
    """The feeder thread of one sequential dataset: join the budget, feed, leave; a failure stops the run."""
    stager = None
    try:
        stager = run.budget.join(route.dataset.name, staging_claim(route.dataset))
        SequentialFeed(run, route, stager).run()
    except WriteCancelled:
        pass
    except BaseException as exc:
        run.fail(exc)
    finally:
        if stager is not None:
            run.budget.leave(stager)


class SequentialFeed:
    """One sequential dataset's feeder: it takes each buffer one unit at a time, budgeting a unit
    when it is first staged, and submits complete units in batches of about one region task, so
    that large buffers become several tasks that workers share. It never waits for budget while
    holding complete units (they are what frees it), which keeps the budget's view exact: bytes
    are either staged, awaiting more input, or a task's."""

    def __init__(self, pipeline: PipelineRun, route: Route, stager: Stager) -> None:
        self.pipeline = pipeline
        self.route = route
        self.dataset = dataset = route.dataset
        self.target = dataset.target
        self.stager = stager
        self.assembler = dataset.assembler()
        self.unit_bytes = self.assembler.staging_nbytes
        known = None not in dataset.bounds  # else the array's shape is only where the data starts
        size = self.target.nbytes if known else pipeline.options.max_inflight_bytes
        self.batch_bytes = pipeline.engine.route_tile_bytes(route, pipeline.options, size)
        self.batch: list[tuple[Coords, np.ndarray]] = []

    def run(self) -> None:
        for region, data in self.dataset.source.coalesced_buffers(self.target.unit_shape[0]):
            if self.pipeline.stop.is_set():
                return
            self._add(region, data)
            self._flush()
        self.pipeline.grow_later(self.target, self.assembler.final_shape())
        for coords, unit in self.assembler.finish():
            self._complete(coords, unit)
        self._flush()

    def _add(self, region: Region, data: np.ndarray) -> None:
        assembler = self.assembler
        for coords in self._assembling(assembler.begin, region):
            if self._assembling(assembler.opens, coords, region):
                self._stage()
            unit = self._assembling(assembler.put, coords, region, data)
            if unit is not None:
                self._complete(coords, unit)

    def _assembling(self, step, *args):
        """One assembler step; a buffer that does not fit the array fails naming the dataset."""
        try:
            return step(*args)
        except ValueError as exc:
            raise ChunkWriteError(self.dataset.name, None, "assembling chunks from its buffers", str(exc)) from exc

    def _stage(self) -> None:
        """Budget one more staged unit."""
        budget = self.pipeline.budget
        if budget.try_acquire(self.unit_bytes, self.stager):
            return
        self._flush()
        try:
            budget.acquire(self.unit_bytes, self.stager)
        except InflightLimitError as exc:
            raise ChunkWriteError(
                self.dataset.name, None, "staging chunks within max_inflight_bytes", str(exc)
            ) from exc

    def _complete(self, coords: Coords, unit: np.ndarray) -> None:
        self.pipeline.budget.hand_over(self.unit_bytes, self.stager)
        self.batch.append((coords, unit))
        if len(self.batch) * self.unit_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        units, self.batch = self.batch, []
        if not units:
            return
        grid = UnitGrid(self.assembler.final_shape(), self.target.unit_shape)
        in_bounds = sum(region_size(grid.unit_region(c)) for c, _ in units)
        self.pipeline.submit(
            lambda: self.route.submit_units(units),
            inflight=len(units) * self.unit_bytes,
            done_bytes=in_bounds * self.target.dtype.itemsize,
            reserved=True,  # handed over from staging as each unit completed
            tally=self.route.tally,
        )
