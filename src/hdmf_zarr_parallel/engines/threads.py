"""A thread pool: no pickling, any store, and real parallelism because zarr's codecs release the GIL."""

from __future__ import annotations

import logging
from concurrent.futures import Future

from ..write.plan import Region
from .base import CANCEL_GRACE_S, MAX_THREADS_PER_CORE, Engine, Route, Units, capped_workers, thread_limit
from .pool import DaemonThreadPool

logger = logging.getLogger(__name__)


class ThreadEngine(Engine):
    """Worker threads, started as tasks arrive, at most ``max_workers`` (and at most
    ``MAX_THREADS_PER_CORE`` per CPU core). They are daemon threads: one stuck in a read that
    never returns is abandoned when the write is cancelled, and cannot keep the process alive."""

    name = "threads"

    def __init__(self, max_workers: int) -> None:
        super().__init__(
            capped_workers(max_workers, thread_limit(), "threads", f"at most {MAX_THREADS_PER_CORE} per CPU core")
        )
        self._pool: DaemonThreadPool | None = None

    @property
    def pool(self) -> DaemonThreadPool:
        if self._pool is None:
            self._pool = DaemonThreadPool(self.max_workers, thread_name_prefix="hzp-writer")
        return self._pool

    def submit_region(self, route: Route, region: Region) -> Future[int]:
        return self.pool.submit(route.dataset.write_region, region)

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        return self.pool.submit(route.dataset.target.write_units, units)

    def shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            stuck = pool.shutdown(wait=True, cancel_futures=cancel, timeout=CANCEL_GRACE_S if cancel else None)
            if stuck:
                logger.warning(
                    "%d writer thread(s) still busy %.0f s after the write was stopped (a read that does not "
                    "return?) were left behind: they store nothing more and do not keep the process alive",
                    len(stuck),
                    CANCEL_GRACE_S,
                )
