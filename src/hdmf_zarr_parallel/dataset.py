"""One dataset's write: its source iterator, target array, unit grid, encoder and sink.

This is the unit of work every engine receives. Reading a region, splitting it into
units and storing them are methods here so that threads, processes and the GPU
engine all share one definition of "write this region".
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from functools import cached_property

import numpy as np
import zarr
from hdmf.data_utils import AbstractDataChunkIterator, DataChunk, DataChunkIterator, GenericDataChunkIterator

from .assemble import BufferPattern, UnitAssembler
from .budget import WriteCancelled
from .concurrent_readers import registered_concurrent_reader
from .cpu.unit import ZarrUnitEncoder
from .errors import ChunkWriteError
from .plan import Coords, Region, UnitGrid, region_size
from .sink import ChunkSink, make_sink
from .timeouts import CallTimedOut, TimedCalls, call_with_timeout

logger = logging.getLogger(__name__)


def reads_concurrently(iterator: AbstractDataChunkIterator, requested: bool | None = None) -> bool:
    """Whether several workers may call one iterator's ``_get_data`` at the same time.

    ``requested`` (the ``concurrent_reads`` write option) decides when given. Else the
    iterator's own ``concurrent_reads`` attribute does, and for an iterator without one,
    the registry of known-safe iterator classes (:mod:`.concurrent_readers`). An iterator
    that reads through a shared file handle (seek, then read) would return the wrong bytes
    if two threads interleaved, so one that nothing vouches for is read by one worker at a
    time, while encoding and storing stay parallel.
    """
    if requested is not None:
        return requested
    declared = getattr(iterator, "concurrent_reads", None)
    if declared is not None:
        return declared is True
    return registered_concurrent_reader(iterator)


class DatasetWriter:
    """Writes the data of one ``AbstractDataChunkIterator`` into one zarr array."""

    stop: threading.Event | None = None  # the write's stop flag, set by bind(); never pickled
    read_timeout: float | None = None

    def __init__(
        self, array: zarr.Array, iterator: AbstractDataChunkIterator, concurrent_reads: bool | None = None
    ) -> None:
        self.array = array
        self.iterator = iterator
        self.name = array.path or array.name or "<root>"
        self.dtype = np.dtype(array.dtype)
        self.unit_shape: tuple[int, ...] = tuple(array.shards or array.chunks)
        self.concurrent_reads = reads_concurrently(iterator, concurrent_reads)
        self._read_lock = None if self.concurrent_reads else threading.Lock()
        if not self.concurrent_reads and self.random_access:
            logger.info(
                "dataset '%s': %s does not declare concurrent_reads, so its regions are read one at a time "
                "(encoding stays parallel); pass concurrent_reads=True if its _get_data is thread-safe",
                self.name,
                type(iterator).__name__,
            )

    def bind(self, stop: threading.Event, read_timeout: float | None = None) -> None:
        """Join a write: once ``stop`` is set nothing more is read or stored (a worker that comes
        back late from a stuck read stores nothing), and each read may take ``read_timeout`` s."""
        self.stop = stop
        self.read_timeout = read_timeout

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise WriteCancelled

    # -- geometry -------------------------------------------------------------------
    @property
    def random_access(self) -> bool:
        """Whether regions can be read in any order (else the iterator is consumed in order)."""
        return isinstance(self.iterator, GenericDataChunkIterator)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.random_access:
            return tuple(min(a, m) for a, m in zip(self.array.shape, self.iterator.maxshape, strict=True))
        return tuple(self.array.shape)

    @cached_property
    def grid(self) -> UnitGrid:
        return UnitGrid(self.shape, self.unit_shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the data to write (of what a sequential iterator has announced so far)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def unit_nbytes(self) -> int:
        return math.prod(self.unit_shape) * self.dtype.itemsize

    @property
    def buffer_shape(self) -> tuple[int, ...] | None:
        return tuple(self.iterator.buffer_shape) if self.random_access else None

    def region_nbytes(self, region: Region) -> int:
        return region_size(region) * self.dtype.itemsize

    # -- stages ---------------------------------------------------------------------
    @cached_property
    def encoder(self) -> ZarrUnitEncoder:
        return ZarrUnitEncoder(self.array)

    @cached_property
    def sink(self) -> ChunkSink:
        return make_sink(self.array, self.name, self.stop)

    def read(self, region: Region) -> np.ndarray:
        """Read one region from a random-access iterator (one at a time unless it reads concurrently).

        With ``read_timeout`` the read runs on a helper thread, abandoned if it takes longer."""
        self._check_stop()
        lock = self._read_lock
        if lock is not None:
            while not lock.acquire(timeout=0.1):  # another worker's read may never return
                self._check_stop()
        started = False

        def get() -> np.ndarray:
            nonlocal started
            started = True
            try:
                return np.asarray(self.iterator._get_data(selection=region), dtype=self.dtype)
            finally:  # released by the thread that read, once the read returns
                if lock is not None:
                    lock.release()

        try:
            if self.read_timeout is None:
                data = get()
            else:
                data = call_with_timeout(get, self.read_timeout, f"hzp-read-{self.name}")
        except CallTimedOut:
            raise ChunkWriteError(
                self.name,
                None,
                f"reading region {_fmt(region)}",
                f"the iterator returned no data within read_timeout={self.read_timeout:g} s; the read was abandoned",
            ) from None
        except BaseException as exc:
            if lock is not None and not started:  # the helper thread could not even start
                lock.release()
            if not isinstance(exc, Exception):
                raise
            raise ChunkWriteError(self.name, None, f"reading region {_fmt(region)}", repr(exc)) from exc
        return _exactly(data, tuple(r.stop - r.start for r in region), self.name, region)

    def split(self, region: Region, data: np.ndarray) -> Iterator[tuple[Coords, np.ndarray]]:
        """The units of a unit-aligned region, as views into its data."""
        for coords in self.grid.units_overlapping(region):
            unit = self.grid.unit_region(coords)
            yield (
                coords,
                data[tuple(slice(u.start - r.start, u.stop - r.start) for u, r in zip(unit, region, strict=True))],
            )

    def encode_unit(self, coords: Coords, data: np.ndarray):
        """One whole unit's encoded bytes (``None``: all fill value, its key is deleted)."""
        try:
            return self.encoder.encode(data)
        except Exception as exc:
            raise ChunkWriteError(self.name, coords, "encoding", repr(exc)) from exc

    def store_unit(self, coords: Coords, data: np.ndarray) -> None:
        """Encode one whole unit and store it under its key (nothing once the write is stopping)."""
        self._check_stop()
        self.sink.put(coords, self.encode_unit(coords, data))

    def store_units(self, units) -> None:
        """Encode whole units, then store them in one batch (one event-loop hop for async stores);
        nothing once the write is stopping."""
        self._check_stop()
        self.sink.put_many([(coords, self.encode_unit(coords, data)) for coords, data in units])

    def write_region(self, region: Region) -> int:
        """Read, encode and store one unit-aligned region; returns its size in bytes."""
        self.store_units(self.split(region, self.read(region)))
        return self.region_nbytes(region)

    # -- sequential iterators -------------------------------------------------------
    @property
    def bounds(self) -> tuple[int | None, ...]:
        """Per axis, the final extent of a sequential iterator's data, or ``None`` where it may still grow:
        where its maxshape is unlimited, or larger than the array (hdmf-zarr creates the array with the
        iterator's ``recommended_data_shape``; like stock, the write grows it to what the buffers reach)."""
        maxshape = getattr(self.iterator, "maxshape", None) or (None,) * len(self.shape)
        return tuple(None if m is None or a < m else int(a) for a, m in zip(self.array.shape, maxshape, strict=True))

    @property
    def buffer_pattern(self) -> BufferPattern | None:
        """How a sequential iterator cuts its data, where that is known before reading it: hdmf's own
        ``DataChunkIterator`` (not a subclass that reads its buffers its own way)."""
        iterator = self.iterator
        if not isinstance(iterator, DataChunkIterator) or any(
            getattr(type(iterator), name) is not getattr(DataChunkIterator, name)
            for name in ("__next__", "_read_next_chunk")
        ):
            return None
        return BufferPattern(iterator.iter_axis, iterator.buffer_size)

    def assembler(self) -> UnitAssembler:
        return UnitAssembler(self.unit_shape, self.dtype, self.array.metadata.fill_value, self.bounds)

    def chunks(self) -> Iterator[tuple[Region, np.ndarray]]:
        """The buffers of a sequential iterator as (region, data) pairs.

        With ``read_timeout`` each buffer is read on a helper thread, abandoned if it takes longer."""
        iterator = iter(self.iterator)
        timed = None if self.read_timeout is None else TimedCalls(f"hzp-read-{self.name}")
        received, last = 0, None
        try:
            while True:
                try:
                    chunk = next(iterator) if timed is None else timed.call(lambda: next(iterator), self.read_timeout)
                except StopIteration:
                    return
                except CallTimedOut:
                    after = "" if last is None else f", the one after region {_fmt(last)}"
                    raise ChunkWriteError(
                        self.name,
                        None,
                        f"reading buffer {received + 1} from the iterator{after}",
                        f"no buffer within read_timeout={self.read_timeout:g} s; the read was abandoned",
                    ) from None
                except Exception as exc:
                    raise ChunkWriteError(self.name, None, "reading from the iterator", repr(exc)) from exc
                received += 1
                if chunk is None or chunk.data is None:
                    continue
                region, data = self._normalize(chunk)
                last = region
                yield region, data
        finally:
            if timed is not None:
                timed.close()

    def _normalize(self, chunk: DataChunk) -> tuple[Region, np.ndarray]:
        data = np.asarray(chunk.data, dtype=self.dtype)
        selection = chunk.selection if isinstance(chunk.selection, tuple) else (chunk.selection,)
        region = []
        for axis in range(len(self.shape)):
            sel = selection[axis] if axis < len(selection) else slice(None)
            if isinstance(sel, (int, np.integer)):
                sel = slice(int(sel), int(sel) + 1)
            if not isinstance(sel, slice) or sel.step not in (None, 1):
                raise ChunkWriteError(
                    self.name, None, "reading from the iterator", f"unsupported selection {chunk.selection!r}"
                )
            start = sel.start or 0
            stop = sel.stop if sel.stop is not None else start + (data.shape[axis] if axis < data.ndim else 1)
            region.append(slice(start, stop))
        region = tuple(region)
        return region, _exactly(data, tuple(r.stop - r.start for r in region), self.name, region)

    def grow_to(self, shape: tuple[int, ...]) -> bool:
        """Resize the array when a sequential iterator delivered more than it announced."""
        if not any(s > a for s, a in zip(shape, self.array.shape, strict=True)):
            return False
        new_shape = tuple(max(s, a) for s, a in zip(shape, self.array.shape, strict=True))
        self.array.resize(new_shape)
        self.__dict__.pop("grid", None)
        return True

    # -- pickling for process pools -------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for derived in ("encoder", "sink", "grid", "_read_lock", "stop"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._read_lock = None if self.concurrent_reads else threading.Lock()
        # no stop flag here: a worker process is stopped by terminating it, a Dask task by cancelling it


def _exactly(data: np.ndarray, shape: tuple[int, ...], name: str, region: Region) -> np.ndarray:
    """``data`` as the region's shape; an iterator that returned more or fewer values is an error,
    never padded with the fill value (axes of length 1 may differ, as from a squeezed column)."""
    if data.shape == shape:
        return data
    if data.size == math.prod(shape) and [n for n in data.shape if n != 1] == [n for n in shape if n != 1]:
        return data.reshape(shape)
    raise ChunkWriteError(
        name, None, f"reading region {_fmt(region)}", f"the iterator returned shape {data.shape}, expected {shape}"
    )


def _fmt(region: Region) -> str:
    return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"
