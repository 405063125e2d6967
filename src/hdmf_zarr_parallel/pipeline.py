"""Drive every dataset of one write through an engine: plan → read → encode → store → finalize.

Random-access datasets are cut into unit-aligned tiles, interleaved across datasets
so all of them progress together; sequential datasets are read by one feeder thread
each, which assembles whole units and hands them on. A byte budget bounds what is in
flight, and the first failure anywhere stops everything and is re-raised here.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait

import numpy as np

from .assemble import coalesce, coalesced, peak_open_units
from .budget import ByteBudget, InflightLimitError, Stager, WriteCancelled
from .dataset import DatasetWriter
from .engines.base import CANCEL_GRACE_S, Engine, Route
from .errors import ChunkWriteError
from .options import WriteOptions
from .plan import Coords, Region, UnitGrid, choose_tile_units, region_size
from .progress import Progress
from .report import DatasetTally, WriteReport, engines_used

logger = logging.getLogger(__name__)

COALESCE_BYTES = 4 << 20  # sequential buffers that continue each other are staged in blocks up to this size


def staging_claim(writer: DatasetWriter) -> int:
    """The most bytes a sequential dataset will hold staged at once, where its iterator's buffer
    pattern is known before reading (``peak_open_units``); 0 where it is not."""
    pattern = writer.buffer_pattern
    if pattern is None:
        return 0
    row_nbytes = math.prod(writer.shape[1:]) * writer.dtype.itemsize
    pattern = coalesced(pattern, writer.unit_shape[0], writer.bounds[0], row_nbytes, COALESCE_BYTES)
    return (peak_open_units(writer.unit_shape, writer.bounds, pattern) or 0) * writer.assembler().staging_nbytes


def validate(writers: Sequence[DatasetWriter], options: WriteOptions) -> None:
    """Refuse, before any data moves, a write that cannot keep its memory bound, saying what bound would."""
    for writer in writers:
        needed, what, remedy = _inflight_need(writer)
        if needed > options.max_inflight_bytes:
            raise ValueError(
                f"dataset '{writer.name}': {what} needs {needed} bytes in flight, more than max_inflight_bytes="
                f"{options.max_inflight_bytes}; {remedy}, or use smaller chunks"
            )


def _inflight_need(writer: DatasetWriter) -> tuple[int, str, str]:
    """The fewest bytes in flight a dataset's write can keep to, what holds them, and what would
    do: one unit of a random-access dataset; the peak of a sequential one's staged units (each with
    its mask of the elements received, assemble.py) where its buffers can be foreseen, else one
    staged unit, which its buffers may turn out to exceed."""
    units = f"{'shard' if writer.array.shards else 'chunk'}s of shape {writer.unit_shape}"
    if writer.random_access:
        return writer.unit_nbytes, f"one of its {units}", f"max_inflight_bytes={writer.unit_nbytes} would work"
    staging = writer.assembler().staging_nbytes
    claim = staging_claim(writer)
    pattern = writer.buffer_pattern
    if claim > staging:
        return (
            claim,
            f"its iterator's buffers keep {claim // staging} of its {units} staged at once, which",
            f"max_inflight_bytes={claim} would work, as would a buffer_size that is a multiple of "
            f"{writer.unit_shape[pattern.axis]}",
        )
    if pattern is not None:
        return staging, f"one of its {units}, staged,", f"max_inflight_bytes={staging} would work"
    return staging, f"one of its {units}, staged,", f"it needs at least {staging} (its buffers may need more)"


def plan_tiles(writer: DatasetWriter, engine: Engine, options: WriteOptions) -> Iterator[Region]:
    """The unit-aligned region tasks of a random-access dataset, sized by the engine."""
    if writer.grid.is_empty:
        return iter(())
    target_bytes = engine.tile_bytes(options, writer.nbytes)
    units = choose_tile_units(writer.grid, writer.buffer_shape, writer.dtype.itemsize, target_bytes)
    return writer.grid.tiles(units)


class _Dispatcher:
    """Submits the tiles of random-access datasets, round robin across every dataset known so far,
    so that all of them progress together while more keep arriving."""

    def __init__(self, run: PipelineRun) -> None:
        self._run = run
        self._arrivals: queue.SimpleQueue[Route | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="hzp-dispatch", daemon=True)
        self._thread.start()

    def add(self, route: Route) -> None:
        self._arrivals.put(route)

    def close(self) -> None:
        self._arrivals.put(None)

    def join(self, stop: threading.Event, deadline: float | None = None) -> None:
        while self._thread.is_alive() and not stop.is_set():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return
            self._thread.join(timeout=left)

    def _loop(self) -> None:
        run = self._run
        active: list[Iterator[tuple[Route, Region]]] = []
        closed = False
        try:
            while not run.stop.is_set():
                while True:  # take every dataset that has arrived; wait for one only when idle
                    try:
                        route = self._arrivals.get(block=not active and not closed, timeout=None)
                    except queue.Empty:
                        break
                    if route is None:
                        closed = True
                        break
                    tiles = plan_tiles(route.dataset, run.engine, run.options)
                    active.append(zip(itertools.repeat(route), tiles))
                if not active:
                    if closed:
                        return
                    continue
                for stream in list(active):
                    item = next(stream, None)
                    if item is None:
                        active.remove(stream)
                        continue
                    route, region = item
                    nbytes = route.dataset.region_nbytes(region)
                    run.submit(lambda w=route, r=region: w.submit_region(r), nbytes, nbytes, tally=route.tally)
        except WriteCancelled:
            pass
        except BaseException as exc:
            run.fail(exc)


class PipelineRun:
    """One write in progress. Datasets join with :meth:`add` as hdmf-zarr creates them, and start
    writing at once, while hdmf-zarr goes on writing groups and attributes; :meth:`finish` waits
    for everything, applies the final shapes, and re-raises the first failure."""

    def __init__(self, engine: Engine, options: WriteOptions) -> None:
        self.engine = engine
        self.options = options
        self.stop = threading.Event()
        self.budget = ByteBudget(options.max_inflight_bytes, self.stop)
        self.progress = Progress(options.progress, 0, f"hdmf-zarr-parallel [{engine.describe()}]")
        self.errors: list[BaseException] = []
        self.datasets = 0
        self._futures: set[Future] = set()
        self._lock = threading.Lock()
        self._dispatcher: _Dispatcher | None = None
        self._feeders: list[threading.Thread] = []
        self._final_shapes: list[tuple[DatasetWriter, tuple[int, ...]]] = []
        self._finished = False
        self._tallies: list[DatasetTally] = []  # one per dataset, in arrival order

    # -- arrivals ---------------------------------------------------------------------
    def add(self, writer: DatasetWriter) -> None:
        """Start writing one dataset. Refuses it (and stops the run) if it cannot be written."""
        self.raise_if_failed()
        writer.bind(self.stop, self.options.read_timeout)
        try:
            validate([writer], self.options)
            route = self.engine.admit(writer)
        except BaseException:
            self.abort()
            raise
        route.tally = DatasetTally(writer.name, route.describe(), route.reason)
        self._tallies.append(route.tally)
        self.datasets += 1
        if None in writer.bounds:  # a generator of unknown length
            self.progress.mark_unbounded()
        else:
            self.progress.add_total(math.prod(writer.shape) * writer.dtype.itemsize)
        if writer.random_access:
            if self._dispatcher is None:
                self._dispatcher = _Dispatcher(self)
            self._dispatcher.add(route)
            return
        feeder = threading.Thread(target=self._feed, args=(route,), name=f"hzp-feed-{writer.name}", daemon=True)
        self._feeders.append(feeder)
        feeder.start()

    def raise_if_failed(self) -> None:
        """Fail fast: a dataset that failed while hdmf-zarr was still writing stops the write now."""
        if self.errors:
            self.abort()
            raise self.errors[0]

    # -- tasks ------------------------------------------------------------------------
    def submit(
        self, make_future, inflight: int, done_bytes: int, reserved: bool = False, tally: DatasetTally | None = None
    ) -> None:
        """Take ``inflight`` bytes of budget (unless already ``reserved``), start a task,
        and give the bytes back when it ends (counting ``done_bytes`` to its dataset's ``tally``)."""
        if not reserved:
            self.budget.acquire(inflight)
        if tally is not None:
            tally.task_started()
        try:
            future = make_future()
        except BaseException:
            self.budget.release(inflight)
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(lambda f: self._finished_task(f, inflight, done_bytes, tally))

    def _finished_task(self, future: Future, inflight: int, done_bytes: int, tally: DatasetTally | None) -> None:
        self.budget.release(inflight)
        with self._lock:
            self._futures.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.progress.update(done_bytes)
            if tally is not None:
                tally.task_done(done_bytes)
        elif not isinstance(error, WriteCancelled):  # a task that saw the write stopping
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)
        self.budget.cancel()

    def _feed(self, route: Route) -> None:
        """Read a sequential iterator in order, assemble whole units and submit them."""
        stager = None
        try:
            stager = self.budget.join(route.dataset.name, staging_claim(route.dataset))
            _SequentialFeed(self, route, stager).run()
        except WriteCancelled:
            pass
        except BaseException as exc:
            self.fail(exc)
        finally:
            if stager is not None:
                self.budget.leave(stager)

    # -- the end ------------------------------------------------------------------------
    def _wait_all(self) -> None:
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending or self.stop.is_set():
                return
            wait(pending, timeout=0.5)

    def finish(self) -> WriteReport:
        """Wait for every dataset, grow the arrays that sequential iterators extended, and
        re-raise the first failure with nothing left running."""
        resized: tuple[str, ...] = ()
        try:
            if self._dispatcher is not None:
                self._dispatcher.close()
                self._dispatcher.join(self.stop)
            for feeder in self._feeders:
                while feeder.is_alive() and not self.stop.is_set():
                    feeder.join(timeout=0.2)
            self._wait_all()
            if not self.errors:
                resized = tuple(writer.name for writer, shape in self._final_shapes if writer.grow_to(shape))
        except BaseException as exc:  # KeyboardInterrupt included: stop the workers, then re-raise
            self.fail(exc)
        finally:
            self._close()
        if self.errors:
            raise self.errors[0]
        return WriteReport(
            engines_used(self.engine.describe(), self._tallies),
            self.datasets,
            self.progress.written,
            self.budget.peak,
            resized,
            tuple(t.report() for t in self._tallies),
        )

    def abort(self) -> None:
        """Stop everything now (hdmf-zarr itself failed, or a dataset was refused); a later
        :meth:`finish` raises instead of reporting a complete write."""
        with self._lock:
            if not self.errors:
                self.errors.append(RuntimeError("the write was aborted before all of its data was stored"))
        self.stop.set()
        self.budget.cancel()
        self._close()

    def _close(self) -> None:
        if self._finished:
            return
        self._finished = True
        failed = bool(self.errors) or self.stop.is_set()
        # a stopped write waits a moment for its threads, then leaves those stuck in a read that
        # does not return (daemon threads: they store nothing more and do not keep the process alive)
        deadline = time.monotonic() + CANCEL_GRACE_S if failed else None
        if failed:
            self.budget.cancel()
        if self._dispatcher is not None:
            self._dispatcher.close()
        self.engine.shutdown(cancel=failed)
        if deadline is not None:  # a moment for the dispatcher and feeders to see the stop, however long that took
            deadline = max(deadline, time.monotonic() + 0.2)
        if self._dispatcher is not None:
            self._dispatcher.join(threading.Event(), deadline)
        for feeder in self._feeders:
            feeder.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.progress.close()


class _SequentialFeed:
    """One sequential dataset's feeder: it takes each buffer one unit at a time, budgeting a unit
    when it is first staged, and submits complete units in batches of about one region task, so
    that large buffers become several tasks that workers share. It never waits for budget while
    holding complete units (they are what frees it), which keeps the budget's view exact: bytes
    are either staged, awaiting more input, or a task's."""

    def __init__(self, pipeline: PipelineRun, route: Route, stager: Stager) -> None:
        self.pipeline = pipeline
        self.route = route
        self.writer = writer = route.dataset
        self.stager = stager
        self.assembler = writer.assembler()
        self.unit_bytes = self.assembler.staging_nbytes
        known = None not in writer.bounds  # else the array's shape is only where the data starts
        size = writer.nbytes if known else pipeline.options.max_inflight_bytes
        self.batch_bytes = pipeline.engine.tile_bytes(pipeline.options, size)
        self.batch: list[tuple[Coords, np.ndarray]] = []

    def run(self) -> None:
        for region, data in coalesce(self.writer.chunks(), self.writer.unit_shape[0], COALESCE_BYTES):
            if self.pipeline.stop.is_set():
                return
            self._add(region, data)
            self._flush()
        with self.pipeline._lock:  # applied by finish(), once hdmf-zarr no longer touches the array's metadata
            self.pipeline._final_shapes.append((self.writer, self.assembler.final_shape()))
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
            raise ChunkWriteError(self.writer.name, None, "assembling chunks from its buffers", str(exc)) from exc

    def _stage(self) -> None:
        """Budget one more staged unit."""
        budget = self.pipeline.budget
        if budget.try_acquire(self.unit_bytes, self.stager):
            return
        self._flush()
        try:
            budget.acquire(self.unit_bytes, self.stager)
        except InflightLimitError as exc:
            raise ChunkWriteError(self.writer.name, None, "staging chunks within max_inflight_bytes", str(exc)) from exc

    def _complete(self, coords: Coords, unit: np.ndarray) -> None:
        self.pipeline.budget.hand_over(self.unit_bytes, self.stager)
        self.batch.append((coords, unit))
        if len(self.batch) * self.unit_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        units, self.batch = self.batch, []
        if not units:
            return
        grid = UnitGrid(self.assembler.final_shape(), self.writer.unit_shape)
        in_bounds = sum(region_size(grid.unit_region(c)) for c, _ in units)
        self.pipeline.submit(
            lambda: self.route.submit_units(units),
            inflight=len(units) * self.unit_bytes,
            done_bytes=in_bounds * self.writer.dtype.itemsize,
            reserved=True,  # handed over from staging as each unit completed
            tally=self.route.tally,
        )


def write_datasets(writers: Sequence[DatasetWriter], engine: Engine, options: WriteOptions) -> WriteReport:
    """Write every dataset completely, or re-raise the first failure with nothing left running."""
    validate(writers, options)  # all of them, before any data moves
    run = PipelineRun(engine, options)
    for writer in writers:
        run.add(writer)
    return run.finish()
