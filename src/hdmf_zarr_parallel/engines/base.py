"""The engine seam: every engine runs the same two kinds of task.

Like ``concurrent.futures``, one small interface with interchangeable
implementations. The pipeline (:mod:`..write.pipeline`) decides *what* to write, in which
order and under which memory bound; an engine decides *where* the work runs.

A dataset joins an engine through :meth:`Engine.admit`, which returns its :class:`Route`:
everything that engine prepared for it (a pickled payload, a GPU codec plan, ...). The
pipeline hands the route back with each task, ``route.engine.submit_region(route, region)``,
so engines keep no per-dataset tables. A route's ``engine`` is the engine that runs its
tasks: an engine that leaves a dataset to threads (``processes`` and ``gpu`` do, for
datasets they cannot take) returns the route of its :class:`~.threads.ThreadEngine`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass
from typing import ClassVar

from ..options import WriteOptions, default_workers
from ..write.dataset import DatasetWrite
from ..write.plan import Region
from ..write.target import Units

logger = logging.getLogger(__name__)

# Beyond this, bigger CPU tasks only lengthen the tail (benchmarks/RESULTS.md has the measurements).
MAX_TILE_BYTES = 16 << 20
# Worker threads mostly wait (in codecs that release the GIL, or on storage): more than a few per
# core can still help with slow object stores, but beyond this they only add contention and memory.
MAX_THREADS_PER_CORE = 32
# A cancelled write (a failure, Ctrl-C) waits this long for the tasks running, so that normally
# nothing is left behind; a task still running after it (a read that never returns) is abandoned.
CANCEL_GRACE_S = 1.0


def tile_bytes_for(max_inflight_bytes: int, concurrent: int, dataset_nbytes: int, cap: int = MAX_TILE_BYTES) -> int:
    """Bytes per region task: enough to amortise overheads, small enough that ``concurrent`` tasks
    in flight and as many waiting fit twice into the memory bound, and that a dataset smaller
    than that still makes about two tasks per concurrent worker (else one worker writes it alone).
    ``concurrent`` is the engine's worker count, capped (see :func:`capped_workers`), so an absurd
    ``max_workers`` cannot shred a write into tasks of one chunk each."""
    concurrent = max(1, concurrent)
    return max(1, min(cap, max_inflight_bytes // (2 * concurrent), dataset_nbytes // (2 * concurrent)))


def capped_workers(requested: int, limit: int, what: str, rule: str) -> int:
    """``requested`` workers, but at most ``limit``; a capped request is logged with its ``rule``."""
    if requested <= limit:
        return requested
    logger.warning("max_workers=%d: using %d %s instead (%s)", requested, limit, what, rule)
    return limit


def thread_limit() -> int:
    """The most worker threads one engine starts: ``MAX_THREADS_PER_CORE`` per usable CPU core."""
    return MAX_THREADS_PER_CORE * default_workers()


@dataclass(eq=False)
class Route:
    """One dataset's way through an engine: made by :meth:`Engine.admit`, handed back with each task.

    ``engine`` runs the dataset's tasks; engines that prepare something per dataset subclass
    this to carry it.
    """

    engine: Engine
    dataset: DatasetWrite

    #: why the dataset took this route, for the write report: a fallback's reason, or how an engine
    #: that routes each dataset (``gpu``) chose; "" when there is nothing to say
    reason: ClassVar[str] = ""

    def because(self, reason: str) -> Route:
        """This route, recording why the dataset took it (for the write report)."""
        self.reason = reason
        return self

    def describe(self) -> str:
        return self.engine.describe()

    def detail(self) -> str:
        """What the route did, known once the write has ended (for the write report); "" for nothing."""
        return ""

    def submit_region(self, region: Region) -> Future[int]:
        return self.engine.submit_region(self, region)

    def submit_units(self, units: Units) -> Future[int]:
        return self.engine.submit_units(self, units)


class Engine(ABC):
    """Runs region tasks (read + encode + store) and unit tasks (encode + store)."""

    name: str = "engine"

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers

    def admit(self, dataset: DatasetWrite) -> Route:
        """Called once per dataset, before any of its tasks: the place to check it, or refuse it
        with a clear error, and to prepare what its tasks need (kept in the route returned)."""
        return Route(self, dataset)

    @abstractmethod
    def submit_region(self, route: Route, region: Region) -> Future[int]:
        """Read, encode and store one unit-aligned region of a random-access dataset."""

    @abstractmethod
    def submit_units(self, route: Route, units: Units) -> Future[int]:
        """Encode and store whole units assembled from a sequential iterator."""

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Release every worker; with ``cancel`` drop queued tasks first."""

    def tile_bytes(self, options: WriteOptions, dataset_nbytes: int) -> int:
        """Bytes per region task of a dataset, with one task in flight per worker."""
        return tile_bytes_for(options.max_inflight_bytes, self.max_workers, dataset_nbytes)

    def route_tile_bytes(self, route: Route, options: WriteOptions, dataset_nbytes: int) -> int:  # noqa: ARG002
        """Bytes per task of one dataset on its route; engines whose routes run on different workers override it."""
        return self.tile_bytes(options, dataset_nbytes)

    def describe(self) -> str:
        return f"{self.name} ({self.max_workers} workers)"
