"""A process pool for iterators whose reading holds the GIL (pure-Python decoding, for example).

Each worker receives every eligible dataset once, at start-up, and then only
``(dataset index, region)`` per task. A dataset is eligible when its iterator is
random-access and picklable and its store is a local directory that other processes
can open. Every other dataset is written by threads in this process, and a warning
names it and says why, so nothing silently loses its parallelism.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
from zarr.storage import LocalStore

from ..dataset import DatasetWriter
from ..plan import Coords, Region
from .base import Engine
from .threads import ThreadEngine

logger = logging.getLogger(__name__)

_WORKER_WRITERS: list[DatasetWriter] = []


def _init_worker(payload: bytes, max_threads: int | None) -> None:
    global _WORKER_WRITERS
    if max_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max_threads)
    _WORKER_WRITERS = pickle.loads(payload)


def _write_region_in_worker(index: int, region: Region) -> int:
    return _WORKER_WRITERS[index].write_region(region)


def process_ineligibility(writer: DatasetWriter) -> str | None:
    """Why a dataset cannot be written by worker processes, or ``None`` if it can."""
    if not writer.random_access:
        return f"its iterator ({type(writer.iterator).__name__}) is sequential, not a GenericDataChunkIterator"
    store = writer.array.store
    if not isinstance(store, LocalStore):
        return f"its store ({type(store).__name__}) cannot be reopened by other processes"
    try:
        pickle.dumps(writer.iterator)
    except Exception as exc:
        return f"its iterator ({type(writer.iterator).__name__}) cannot be pickled: {exc!r}"
    return None


class ProcessEngine(Engine):
    name = "processes"

    def __init__(
        self, max_workers: int, mp_context: str | None = None, max_threads_per_process: int | None = None
    ) -> None:
        super().__init__(max_workers)
        self.mp_context = mp_context or "spawn"
        self.max_threads_per_process = max_threads_per_process
        self._threads = ThreadEngine(max_workers)
        self._pool: ProcessPoolExecutor | None = None
        self._index: dict[int, int] = {}

    def start(self, writers: Sequence[DatasetWriter]) -> None:
        eligible = []
        for writer in writers:
            reason = process_ineligibility(writer)
            if reason is None:
                self._index[id(writer)] = len(eligible)
                eligible.append(writer)
            else:
                warnings.warn(
                    f"dataset '{writer.name}' is written by threads instead of processes: {reason}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if eligible:
            self._pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=multiprocessing.get_context(self.mp_context),
                initializer=_init_worker,
                initargs=(pickle.dumps(eligible), self.max_threads_per_process),
            )
            logger.info("processes engine: %d dataset(s) in %d worker processes", len(eligible), self.max_workers)

    def submit_region(self, writer: DatasetWriter, region: Region) -> Future[int]:
        index = self._index.get(id(writer))
        if index is None or self._pool is None:
            return self._threads.submit_region(writer, region)
        return self._pool.submit(_write_region_in_worker, index, region)

    def submit_units(self, writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> Future[int]:
        return self._threads.submit_units(writer, units)

    def shutdown(self, cancel: bool = False) -> None:
        self._threads.shutdown(cancel)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
        self._index.clear()
