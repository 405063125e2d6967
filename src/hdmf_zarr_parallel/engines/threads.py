"""A thread pool: no pickling, any store, and real parallelism because zarr's codecs release the GIL."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from ..plan import Region
from .base import Engine, Route, Units, write_units


class ThreadEngine(Engine):
    name = "threads"

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="hzp-writer")
        return self._pool

    def submit_region(self, route: Route, region: Region) -> Future[int]:
        return self.pool.submit(route.dataset.write_region, region)

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        return self.pool.submit(write_units, route.dataset, units)

    def shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
