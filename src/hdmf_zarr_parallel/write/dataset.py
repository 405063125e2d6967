"""One dataset of a write: where its data comes from (:mod:`.source`) and where it goes (:mod:`.target`).

This pair is what the pipeline and every engine hand around per dataset. A region task is
the whole data path in three lines, :meth:`DatasetWrite.write_region`: read the region from
the source, cut it into units, encode and store each into the target; threads, worker
processes, Dask workers and the GPU engine's CPU helpers all run that one definition.
"""

from __future__ import annotations

import threading

import numpy as np
import zarr
from hdmf.data_utils import AbstractDataChunkIterator

from .assemble import UnitAssembler
from .plan import Region
from .source import DatasetSource
from .target import DatasetTarget


class DatasetWrite:
    """The data of one ``AbstractDataChunkIterator``, written into one zarr array.

    ``concurrent_reads`` is the write option of that name (``None``: the iterator decides, see
    :func:`~.source.reads_concurrently`). It pickles as its two halves do: the iterator with
    the source, the array handle with the target.
    """

    def __init__(
        self, array: zarr.Array, iterator: AbstractDataChunkIterator, concurrent_reads: bool | None = None
    ) -> None:
        name = array.path or array.name or "<root>"
        self.source = DatasetSource(iterator, name, np.dtype(array.dtype), array.ndim, concurrent_reads)
        self.target = DatasetTarget(array, self.source.write_shape(tuple(array.shape)))

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def random_access(self) -> bool:
        return self.source.random_access

    @property
    def bounds(self) -> tuple[int | None, ...]:
        """Per axis, where the data ends, or ``None`` where a sequential iterator may still grow it."""
        return self.source.bounds(tuple(self.target.array.shape))

    def assembler(self) -> UnitAssembler:
        return self.target.assembler(self.bounds)

    def bind(self, stop: threading.Event, read_timeout: float | None = None) -> None:
        """Join a write: once ``stop`` is set nothing more is read or stored, and each read may
        take ``read_timeout`` seconds."""
        self.source.bind(stop, read_timeout)
        self.target.bind(stop)

    def write_region(self, region: Region) -> int:
        """Read, encode and store one unit-aligned region; returns its size in bytes."""
        self.target.store_region(region, self.source.read(region))
        return self.target.region_nbytes(region)
