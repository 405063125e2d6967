"""A thread pool: no pickling, any store, and real parallelism because zarr's codecs release the GIL."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..dataset import DatasetWriter
from ..plan import Coords, Region
from .base import MAX_THREADS_PER_CORE, Engine, capped_workers, thread_limit, write_units


class ThreadEngine(Engine):
    name = "threads"

    def __init__(self, max_workers: int) -> None:
        super().__init__(
            capped_workers(max_workers, thread_limit(), "threads", f"at most {MAX_THREADS_PER_CORE} per CPU core")
        )
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="hzp-writer")
        return self._pool

    def submit_region(self, writer: DatasetWriter, region: Region) -> Future[int]:
        return self.pool.submit(writer.write_region, region)

    def submit_units(self, writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> Future[int]:
        return self.pool.submit(write_units, writer, units)

    def shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
