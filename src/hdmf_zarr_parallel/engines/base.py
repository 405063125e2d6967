"""The engine seam: every engine runs the same two kinds of task.

Like ``concurrent.futures``, one small interface with interchangeable
implementations. The pipeline (``pipeline.py``) decides *what* to write, in which
order and under which memory bound; an engine decides *where* the work runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from ..dataset import DatasetWriter
from ..options import WriteOptions
from ..plan import Coords, Region

# Beyond this, bigger CPU tasks only lengthen the tail: on 2 cores, 1 GB of ephys wrote 4-5 %
# faster with 8-32 MiB tasks than with 64 MiB (benchmarks/RESULTS.md).
MAX_TILE_BYTES = 16 << 20


def tile_bytes_for(max_inflight_bytes: int, concurrent: int, dataset_nbytes: int, cap: int = MAX_TILE_BYTES) -> int:
    """Bytes per region task: enough to amortise overheads, small enough that ``concurrent`` tasks
    in flight and as many waiting fit twice into the memory bound, and that a dataset smaller
    than that still makes about two tasks per concurrent worker (else one worker writes it alone)."""
    concurrent = max(1, concurrent)
    return max(1, min(cap, max_inflight_bytes // (2 * concurrent), dataset_nbytes // (2 * concurrent)))


def write_units(writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> int:
    """Encode and store already assembled units; returns their in-memory size."""
    writer.store_units(units)
    return sum(data.nbytes for _, data in units)


class Engine(ABC):
    """Runs region tasks (read + encode + store) and unit tasks (encode + store)."""

    name: str = "engine"

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers

    def admit(self, writer: DatasetWriter) -> None:  # noqa: B027 - optional hook
        """Called once per dataset, before any of its tasks: the place to check it, or refuse it
        with a clear error, and to prepare what its tasks need."""

    @abstractmethod
    def submit_region(self, writer: DatasetWriter, region: Region) -> Future[int]:
        """Read, encode and store one unit-aligned region of a random-access dataset."""

    @abstractmethod
    def submit_units(self, writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> Future[int]:
        """Encode and store whole units assembled from a sequential iterator."""

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Release every worker; with ``cancel`` drop queued tasks first."""

    def tile_bytes(self, options: WriteOptions, dataset_nbytes: int) -> int:
        """Bytes per region task of a dataset, with one task in flight per worker."""
        return tile_bytes_for(options.max_inflight_bytes, options.workers, dataset_nbytes)

    def describe(self) -> str:
        return f"{self.name} ({self.max_workers} workers)"
