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
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass

from .budget import ByteBudget, WriteCancelled
from .dataset import DatasetWriter
from .engines.base import Engine
from .options import WriteOptions
from .plan import Region, UnitGrid, choose_tile_units
from .progress import Progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteReport:
    """What one queue exhaustion did: for logs, benchmarks and tests of the memory bound."""

    engine: str
    datasets: int
    bytes_written: int
    peak_inflight_bytes: int


def validate(writers: Sequence[DatasetWriter], options: WriteOptions) -> None:
    """Refuse, before any data moves, a write that cannot keep its memory bound."""
    for writer in writers:
        if writer.unit_nbytes > options.max_inflight_bytes:
            raise ValueError(
                f"dataset '{writer.name}': one {'shard' if writer.array.shards else 'chunk'} of shape "
                f"{writer.unit_shape} holds {writer.unit_nbytes} bytes, more than max_inflight_bytes="
                f"{options.max_inflight_bytes}; raise the limit or use smaller chunks"
            )


def plan_tiles(writer: DatasetWriter, target_bytes: int) -> Iterator[Region]:
    if writer.grid.is_empty:
        return iter(())
    units = choose_tile_units(writer.grid, writer.buffer_shape, writer.dtype.itemsize, target_bytes)
    return writer.grid.tiles(units)


def interleave(writers: Sequence[DatasetWriter], target_bytes: int) -> Iterator[tuple[DatasetWriter, Region]]:
    """Tiles of all datasets, round robin, so that every dataset makes progress at once."""
    streams = [zip(itertools.repeat(w), plan_tiles(w, target_bytes)) for w in writers]
    for batch in itertools.zip_longest(*streams):
        yield from (item for item in batch if item is not None)


class _Run:
    """The shared state of one write: budget, progress, futures and the first error."""

    def __init__(self, engine: Engine, options: WriteOptions, total: int | None) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.budget = ByteBudget(options.max_inflight_bytes, self.stop)
        self.progress = Progress(options.progress, total, f"hdmf-zarr-parallel [{engine.describe()}]")
        self.errors: list[BaseException] = []
        self._futures: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, make_future, inflight: int, done_bytes: int, reserved: bool = False) -> None:
        """Take ``inflight`` bytes of budget (unless already ``reserved``), start a task,
        and give the bytes back when it ends."""
        if not reserved:
            self.budget.acquire(inflight)
        try:
            future = make_future()
        except BaseException:
            self.budget.release(inflight)
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(lambda f: self._finished(f, inflight, done_bytes))

    def _finished(self, future: Future, inflight: int, done_bytes: int) -> None:
        self.budget.release(inflight)
        with self._lock:
            self._futures.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.progress.update(done_bytes)
        else:
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)
        self.budget.cancel()

    def wait_all(self) -> None:
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending or self.stop.is_set():
                return
            wait(pending, timeout=0.5)


def _feed_sequential(run: _Run, writer: DatasetWriter) -> None:
    """Read a sequential iterator in order, assemble whole units and submit them."""
    assembler = writer.assembler()

    def submit(units) -> None:
        if not units:
            return
        grid = UnitGrid(assembler.final_shape(), writer.unit_shape)
        in_bounds = sum(math.prod(r.stop - r.start for r in grid.unit_region(c)) for c, _ in units)
        run.submit(
            lambda: run.engine.submit_units(writer, units),
            inflight=len(units) * writer.unit_nbytes,
            done_bytes=in_bounds * writer.dtype.itemsize,
            reserved=True,  # taken when the units were first staged
        )

    try:
        for region, data in writer.chunks():
            if run.stop.is_set():
                return
            run.budget.acquire(len(assembler.new_units(region)) * writer.unit_nbytes)
            submit(list(assembler.add(region, data)))
        writer.grow_to(assembler.final_shape())
        submit(list(assembler.finish()))
    except WriteCancelled:
        pass
    except BaseException as exc:
        run.fail(exc)


def write_datasets(writers: Sequence[DatasetWriter], engine: Engine, options: WriteOptions) -> WriteReport:
    """Write every dataset completely, or re-raise the first failure with nothing left running."""
    validate(writers, options)
    random = [w for w in writers if w.random_access]
    sequential = [w for w in writers if not w.random_access]
    unknown_length = any(None in w.assembler().bounds for w in sequential)
    total = None if unknown_length else sum(math.prod(w.shape) * w.dtype.itemsize for w in writers)
    run = _Run(engine, options, total)
    feeders = [
        threading.Thread(target=_feed_sequential, args=(run, w), name=f"hzp-feed-{w.name}", daemon=True)
        for w in sequential
    ]
    try:
        engine.start(writers)
        for feeder in feeders:
            feeder.start()
        for writer, region in interleave(random, engine.tile_bytes(options)):
            if run.stop.is_set():
                break
            nbytes = writer.region_nbytes(region)
            run.submit(lambda w=writer, r=region: engine.submit_region(w, r), nbytes, nbytes)
        for feeder in feeders:
            while feeder.is_alive() and not run.stop.is_set():
                feeder.join(timeout=0.2)
        run.wait_all()
    except WriteCancelled:
        pass
    except BaseException as exc:  # KeyboardInterrupt included: stop the workers, then re-raise
        run.fail(exc)
    finally:
        failed = bool(run.errors)
        if failed:
            run.budget.cancel()
        engine.shutdown(cancel=failed)
        for feeder in feeders:
            feeder.join()
        run.progress.close()
    if run.errors:
        raise run.errors[0]
    return WriteReport(engine.describe(), len(writers), run.progress.written, run.budget.peak)
