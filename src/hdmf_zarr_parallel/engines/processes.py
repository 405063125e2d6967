"""A process pool for iterators whose reading holds the GIL (pure-Python decoding, for example).

Each dataset is pickled once, when it joins the write; every task carries those bytes and
a worker unpickles them the first time it meets the dataset (so iterators should pickle
small, by file path, as stock hdmf-zarr also requires). A dataset is eligible when its iterator is
random-access and picklable and its store can be opened by another process
(:mod:`.reach`). Every other dataset is routed to threads in this process, and a warning
names it and says why, so nothing silently loses its parallelism.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from ..dataset import DatasetWriter
from ..plan import Region
from .base import Engine, Route, Units
from .reach import unreachable_reason
from .threads import ThreadEngine

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 16 << 20  # a dataset pickling larger than this holds its data: keep it in this process
_WORKER_WRITERS: dict[int, DatasetWriter] = {}


def _init_worker(max_threads: int | None) -> None:
    if max_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max_threads)


def _write_region_in_worker(token: int, payload: bytes, region: Region) -> int:
    writer = _WORKER_WRITERS.get(token)
    if writer is None:
        writer = _WORKER_WRITERS[token] = pickle.loads(payload)
    return writer.write_region(region)


def process_ineligibility(writer: DatasetWriter) -> str | None:
    """Why a dataset cannot be written by worker processes, or ``None`` if it can."""
    if not writer.random_access:
        return f"its iterator ({type(writer.iterator).__name__}) is sequential, not a GenericDataChunkIterator"
    reason = unreachable_reason(writer.array.store)
    if reason is not None:
        return reason
    try:
        pickle.dumps(writer.iterator)
    except Exception as exc:
        return f"its iterator ({type(writer.iterator).__name__}) cannot be pickled: {exc!r}"
    return None


@dataclass(eq=False)
class ProcessRoute(Route):
    """A dataset the worker processes write: its pickled bytes, and the token workers cache them by
    (fresh per dataset: a worker must never mistake a new dataset for one it has cached)."""

    token: int = 0
    payload: bytes = b""


class ProcessEngine(Engine):
    name = "processes"

    def __init__(
        self, max_workers: int, mp_context: str | None = None, max_threads_per_process: int | None = None
    ) -> None:
        super().__init__(max_workers)
        self.mp_context = mp_context or "spawn"
        self.max_threads_per_process = max_threads_per_process
        self._threads = ThreadEngine(max_workers)  # the route of the datasets processes cannot write
        self._pool: ProcessPoolExecutor | None = None
        self._tokens = itertools.count()

    def admit(self, dataset: DatasetWriter) -> Route:
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
            return self._threads.admit(dataset)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=multiprocessing.get_context(self.mp_context),
                initializer=_init_worker,
                initargs=(self.max_threads_per_process,),
            )
            logger.info("processes engine: %d worker processes", self.max_workers)
        return ProcessRoute(self, dataset, next(self._tokens), payload)

    def submit_region(self, route: ProcessRoute, region: Region) -> Future[int]:
        return self._pool.submit(_write_region_in_worker, route.token, route.payload, region)

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        raise TypeError("sequential datasets are routed to threads")  # admit() never routes them here

    def shutdown(self, cancel: bool = False) -> None:
        self._threads.shutdown(cancel)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
