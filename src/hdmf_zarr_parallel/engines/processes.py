"""A process pool for iterators whose reading holds the GIL (pure-Python decoding, for example).

Each dataset is pickled once, when it joins the write; every task carries those bytes and
a worker unpickles them the first time it meets the dataset (so iterators should pickle
small, by file path, as stock hdmf-zarr also requires). A dataset is eligible when its iterator is
random-access and picklable and its store can be opened by another process
(:mod:`.reach`). Every other dataset is routed to threads in this process, and a warning
names it and says why, so nothing silently loses its parallelism.
"""

from __future__ import annotations

import concurrent.futures.process
import contextlib
import itertools
import logging
import multiprocessing
import pickle
import signal
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ..errors import ChunkWriteError
from ..options import default_workers
from ..write.dataset import DatasetWrite
from ..write.plan import Region, format_region
from .base import CANCEL_GRACE_S, Engine, Route, Units, capped_workers
from .reach import unreachable_reason
from .threads import ThreadEngine

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 16 << 20  # a dataset pickling larger than this holds its data: keep it in this process
_WORKER_DATASETS: dict[int, DatasetWrite] = {}


def _init_worker(max_threads: int | None, tune_malloc: bool = True) -> None:
    # Ctrl-C in a terminal reaches every process of the group: the writer's process alone handles
    # it, and terminates its workers (one may be stuck in a read no signal would end anyway)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if max_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max_threads)
    if tune_malloc:
        from ..write.allocator import retain_freed_memory

        retain_freed_memory()


def _write_region_in_worker(token: int, payload: bytes, region: Region) -> int:
    dataset = _WORKER_DATASETS.get(token)
    if dataset is None:
        dataset = _WORKER_DATASETS[token] = pickle.loads(payload)
    return dataset.write_region(region)


def process_ineligibility(dataset: DatasetWrite) -> str | None:
    """Why a dataset cannot be written by worker processes, or ``None`` if it can."""
    iterator = dataset.source.iterator
    if not dataset.random_access:
        return f"its iterator ({type(iterator).__name__}) is sequential, not a GenericDataChunkIterator"
    reason = unreachable_reason(dataset.target.array.store)
    if reason is not None:
        return reason
    try:
        pickle.dumps(iterator)
    except Exception as exc:
        return f"its iterator ({type(iterator).__name__}) cannot be pickled: {exc!r}"
    return None


@dataclass(eq=False)
class ProcessRoute(Route):
    """A dataset the worker processes write: its pickled bytes, and the token workers cache them by
    (fresh per dataset: a worker must never mistake a new dataset for one it has cached)."""

    token: int = 0
    payload: bytes = b""


def _worker_died(dataset: DatasetWrite, region: Region, exc: BaseException) -> ChunkWriteError:
    error = ChunkWriteError(
        dataset.name,
        None,
        f"writing region {format_region(region)} in a worker process",
        f"a worker process died (killed, or out of memory?) while this region was in flight: {exc!r}",
    )
    error.__cause__ = exc
    return error


def _relay(inner: Future[int], dataset: DatasetWrite, region: Region) -> Future[int]:
    """A future with ``inner``'s outcome, where a dead worker process (``BrokenProcessPool``, which
    names nothing) becomes a ``ChunkWriteError`` naming the dataset and the region."""
    outer: Future[int] = Future()

    def done(f: Future[int]) -> None:
        if f.cancelled():
            outer.cancel()
            return
        exc = f.exception()
        if exc is None:
            outer.set_result(f.result())
        else:
            outer.set_exception(_worker_died(dataset, region, exc) if isinstance(exc, BrokenProcessPool) else exc)

    inner.add_done_callback(done)
    return outer


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the worker processes at once (a worker may be
    stuck in a read that never returns), then reap them so none outlives the write, and make
    sure the pool's manager thread cannot hold up the interpreter's exit."""
    # Private attributes, present from Python 3.9 to 3.14 (3.14's public terminate_workers() does
    # the same terminate, but we also need the processes, to reap them, and the manager thread).
    # The dict itself, not a copy: it then holds a worker that a submit is starting right now.
    processes = getattr(pool, "_processes", None) or {}
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)  # waits for a submit in progress; no new workers after it
    workers = list(processes.values())
    for process in workers:
        with contextlib.suppress(Exception):  # it may have just exited
            process.terminate()
    deadline = time.monotonic() + CANCEL_GRACE_S
    for process in workers:
        with contextlib.suppress(Exception):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():  # ignored SIGTERM
                process.kill()
                process.join(CANCEL_GRACE_S)
    if manager is not None:
        manager.join(max(0.1, deadline - time.monotonic()))
        if manager.is_alive():  # python/cpython#83386: exit would join it forever
            wakeups = getattr(concurrent.futures.process, "_threads_wakeups", None)
            if wakeups is not None:
                wakeups.pop(manager, None)
            logger.warning("processes engine: the process pool's manager thread did not stop; it was left behind")


class ProcessEngine(Engine):
    """Worker processes, started as tasks arrive (with "spawn", the default context), at most
    ``max_workers`` and at most one per CPU core: they exist for reading that holds the GIL, which
    more processes than cores cannot speed up, and each costs an interpreter (seconds to start,
    and its own memory)."""

    name = "processes"

    def __init__(
        self,
        max_workers: int,
        mp_context: str | None = None,
        max_threads_per_process: int | None = None,
        tune_malloc: bool = True,
    ) -> None:
        super().__init__(capped_workers(max_workers, default_workers(), "worker processes", "one per CPU core"))
        self.mp_context = mp_context or "spawn"
        self.max_threads_per_process = max_threads_per_process
        self.tune_malloc = tune_malloc
        self._threads = ThreadEngine(max_workers)  # the route of the datasets processes cannot write
        self._pool: ProcessPoolExecutor | None = None
        self._tokens = itertools.count()

    def admit(self, dataset: DatasetWrite) -> Route:
        reason = process_ineligibility(dataset)
        payload = pickle.dumps(dataset) if reason is None else b""
        if len(payload) > MAX_PAYLOAD_BYTES:
            reason = (
                f"it pickles to {len(payload) / 2**20:.0f} MiB (its iterator holds its data), which every task "
                "would carry; an iterator that reads from a file keeps process tasks small"
            )
        if reason is not None:
            warnings.warn(
                f"dataset '{dataset.name}' is written by threads instead of processes: {reason}",
                RuntimeWarning,
                stacklevel=2,
            )
            return self._threads.admit(dataset).because(f"threads instead of processes: {reason}")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=multiprocessing.get_context(self.mp_context),
                initializer=_init_worker,
                initargs=(self.max_threads_per_process, self.tune_malloc),
            )
            logger.info("processes engine: %d worker processes", self.max_workers)
        return ProcessRoute(self, dataset, next(self._tokens), payload)

    def submit_region(self, route: ProcessRoute, region: Region) -> Future[int]:
        try:
            inner = self._pool.submit(_write_region_in_worker, route.token, route.payload, region)
        except BrokenProcessPool as exc:
            raise _worker_died(route.dataset, region, exc) from exc
        return _relay(inner, route.dataset, region)

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        raise TypeError("sequential datasets are routed to threads")  # admit() never routes them here

    def shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:  # first: a second Ctrl-C during the threads' grace leaves no process behind
            pool, self._pool = self._pool, None
            if cancel:
                _stop_workers(pool)
            else:
                pool.shutdown(wait=True)
        self._threads.shutdown(cancel)
