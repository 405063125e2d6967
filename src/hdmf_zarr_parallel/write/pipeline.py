"""Drive every dataset of one write through an engine: plan → read → encode → store → finalize.

Each dataset joins as hdmf-zarr creates it (:meth:`PipelineRun.add`): checked against the
memory bound (:func:`validate`), admitted by the engine (which returns its route), and
started at once. Random-access datasets are cut into unit-aligned tiles, interleaved across
datasets so all of them progress together (:mod:`.dispatch`); sequential datasets are read
by one feeder thread each, which assembles whole units and hands them on (:mod:`.feed`).
A byte budget bounds what is in flight (:mod:`.budget`), and the first failure anywhere
stops everything and is re-raised by :meth:`PipelineRun.finish`, which also grows the arrays
that sequential iterators extended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, wait

from ..engines.base import CANCEL_GRACE_S, Engine
from ..options import WriteOptions
from .allocator import release_freed_memory, retain_freed_memory
from .budget import ByteBudget, WriteCancelled
from .dataset import DatasetWrite
from .dispatch import Dispatcher
from .feed import feed, staging_claim
from .progress import Progress
from .report import DatasetTally, WriteReport, engines_used
from .target import DatasetTarget


def validate(datasets: Sequence[DatasetWrite], options: WriteOptions) -> None:
    """Refuse, before any data moves, a write that cannot keep its memory bound, saying what bound would."""
    for dataset in datasets:
        needed, what, remedy = _inflight_need(dataset)
        if needed > options.max_inflight_bytes:
            raise ValueError(
                f"dataset '{dataset.name}': {what} needs {needed} bytes in flight, more than max_inflight_bytes="
                f"{options.max_inflight_bytes}; {remedy}, or use smaller chunks"
            )


def _inflight_need(dataset: DatasetWrite) -> tuple[int, str, str]:
    """The fewest bytes in flight a dataset's write can keep to, what holds them, and what would
    do: one unit of a random-access dataset; the peak of a sequential one's staged units (each with
    its mask of the elements received, assemble.py) where its buffers can be foreseen, else one
    staged unit, which its buffers may turn out to exceed."""
    target = dataset.target
    units = f"{target.unit_kind}s of shape {target.unit_shape}"
    if dataset.random_access:
        return target.unit_nbytes, f"one of its {units}", f"max_inflight_bytes={target.unit_nbytes} would work"
    staging = dataset.assembler().staging_nbytes
    claim = staging_claim(dataset)
    pattern = dataset.source.buffer_pattern
    if claim > staging:
        return (
            claim,
            f"its iterator's buffers keep {claim // staging} of its {units} staged at once, which",
            f"max_inflight_bytes={claim} would work, as would a buffer_size that is a multiple of "
            f"{target.unit_shape[pattern.axis]}",
        )
    if pattern is not None:
        return staging, f"one of its {units}, staged,", f"max_inflight_bytes={staging} would work"
    return staging, f"one of its {units}, staged,", f"it needs at least {staging} (its buffers may need more)"


class PipelineRun:
    """One write in progress. Datasets join with :meth:`add` as hdmf-zarr creates them, and start
    writing at once, while hdmf-zarr goes on writing groups and attributes; :meth:`finish` waits
    for everything, applies the final shapes, and re-raises the first failure."""

    def __init__(self, engine: Engine, options: WriteOptions) -> None:
        self.engine = engine
        self.options = options
        if options.tune_malloc:
            retain_freed_memory()
        self.stop = threading.Event()
        self.budget = ByteBudget(options.max_inflight_bytes, self.stop)
        self.progress = Progress(options.progress, 0, f"hdmf-zarr-parallel [{engine.describe()}]")
        self.errors: list[BaseException] = []
        self.datasets = 0
        self._futures: set[Future] = set()
        self._lock = threading.Lock()
        self._dispatcher: Dispatcher | None = None
        self._feeders: list[threading.Thread] = []
        self._final_shapes: list[tuple[DatasetTarget, tuple[int, ...]]] = []
        self._finished = False
        self._tallies: list[DatasetTally] = []  # one per dataset, in arrival order

    # -- arrivals ---------------------------------------------------------------------
    def add(self, dataset: DatasetWrite) -> None:
        """Start writing one dataset. Refuses it (and stops the run) if it cannot be written."""
        self.raise_if_failed()
        dataset.bind(self.stop, self.options.read_timeout)
        try:
            validate([dataset], self.options)
            route = self.engine.admit(dataset)
        except BaseException:
            self.abort()
            raise
        route.tally = DatasetTally(dataset.name, route.describe(), route.reason, detail=route.detail)
        self._tallies.append(route.tally)
        self.datasets += 1
        if None in dataset.bounds:  # a generator of unknown length
            self.progress.mark_unbounded()
        else:
            self.progress.add_total(dataset.target.nbytes)
        if dataset.random_access:
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(self)
            self._dispatcher.add(route)
            return
        feeder = threading.Thread(target=feed, args=(self, route), name=f"hzp-feed-{dataset.name}", daemon=True)
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

    def grow_later(self, target: DatasetTarget, shape: tuple[int, ...]) -> None:
        """Grow ``target`` to ``shape`` in :meth:`finish`, once hdmf-zarr no longer touches its metadata."""
        with self._lock:
            self._final_shapes.append((target, shape))

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
                resized = tuple(target.name for target, shape in self._final_shapes if target.grow_to(shape))
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
        if self.options.tune_malloc:
            release_freed_memory()  # what the write kept for reuse goes back to the kernel
        self.progress.close()


def write_datasets(datasets: Sequence[DatasetWrite], engine: Engine, options: WriteOptions) -> WriteReport:
    """Write every dataset completely, or re-raise the first failure with nothing left running."""
    validate(datasets, options)  # all of them, before any data moves
    run = PipelineRun(engine, options)
    for dataset in datasets:
        run.add(dataset)
    return run.finish()
