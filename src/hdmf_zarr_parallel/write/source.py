"""A dataset's source: its iterator, read in the pieces the write needs.

A random-access iterator (``GenericDataChunkIterator``) is read one unit-aligned region at a
time, in any order, by many workers; a sequential one is consumed in order by one feeder,
buffer after buffer. Either way the data arrives here as exactly the region asked for, in the
array's dtype: an iterator that returns more or fewer values fails, naming the dataset and
the region, instead of being padded or cut.

Reading is also where an iterator's own limits are kept: one that does not declare that it
may be read concurrently is read by one worker at a time (:func:`reads_concurrently`), a read
may take at most ``read_timeout`` seconds, and nothing is read once the write is stopping.
Sequential buffers that continue each other are joined (:func:`coalesce`) so that staging
costs a few large copies instead of thousands of small ones.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator

import numpy as np
from hdmf.data_utils import AbstractDataChunkIterator, DataChunk, DataChunkIterator, GenericDataChunkIterator

from ..concurrent_readers import registered_concurrent_reader
from ..errors import ChunkWriteError
from .assemble import BufferPattern
from .budget import WriteCancelled
from .plan import Region, format_region
from .timeouts import CallTimedOut, TimedCalls, call_with_timeout

logger = logging.getLogger(__name__)

COALESCE_BYTES = 4 << 20  # sequential buffers that continue each other are staged in blocks up to this size


def reads_concurrently(iterator: AbstractDataChunkIterator, requested: bool | None = None) -> bool:
    """Whether several workers may call one iterator's ``_get_data`` at the same time.

    ``requested`` (the ``concurrent_reads`` write option) decides when given. Else the
    iterator's own ``concurrent_reads`` attribute does, and for an iterator without one,
    the registry of known-safe iterator classes (:mod:`..concurrent_readers`). An iterator
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


class DatasetSource:
    """Reads one ``AbstractDataChunkIterator`` for the dataset ``name`` (of ``dtype``, ``ndim`` axes).

    It pickles with its iterator (for worker processes and Dask workers), never with its lock
    or the write's stop flag: a worker process is stopped by terminating it, a Dask task by
    cancelling it.
    """

    stop: threading.Event | None = None  # the write's stop flag, set by bind()
    read_timeout: float | None = None

    def __init__(
        self,
        iterator: AbstractDataChunkIterator,
        name: str,
        dtype: np.dtype,
        ndim: int,
        concurrent_reads: bool | None = None,
    ) -> None:
        self.iterator = iterator
        self.name = name
        self.dtype = np.dtype(dtype)
        self.ndim = ndim
        self.concurrent_reads = reads_concurrently(iterator, concurrent_reads)
        self._read_lock = None if self.concurrent_reads else threading.Lock()
        if not self.concurrent_reads and self.random_access:
            logger.info(
                "dataset '%s': %s does not declare concurrent_reads, so its regions are read one at a time "
                "(encoding stays parallel); pass concurrent_reads=True if its _get_data is thread-safe",
                name,
                type(iterator).__name__,
            )

    def bind(self, stop: threading.Event, read_timeout: float | None = None) -> None:
        """Join a write: once ``stop`` is set nothing more is read, and each read may take ``read_timeout`` s."""
        self.stop = stop
        self.read_timeout = read_timeout

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise WriteCancelled

    # -- what the iterator says before it is read ---------------------------------------
    @property
    def random_access(self) -> bool:
        """Whether regions can be read in any order (else the iterator is consumed in order)."""
        return isinstance(self.iterator, GenericDataChunkIterator)

    @property
    def buffer_shape(self) -> tuple[int, ...] | None:
        return tuple(self.iterator.buffer_shape) if self.random_access else None

    def write_shape(self, array_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The extent this source writes into an array of ``array_shape``: a random-access iterator
        covers at most its maxshape; a sequential one writes where its buffers say."""
        if self.random_access:
            return tuple(min(a, m) for a, m in zip(array_shape, self.iterator.maxshape, strict=True))
        return tuple(array_shape)

    def bounds(self, array_shape: tuple[int, ...]) -> tuple[int | None, ...]:
        """Per axis, the final extent of a sequential iterator's data, or ``None`` where it may still grow:
        where its maxshape is unlimited, or larger than the array (hdmf-zarr creates the array with the
        iterator's ``recommended_data_shape``; like stock, the write grows it to what the buffers reach)."""
        maxshape = getattr(self.iterator, "maxshape", None) or (None,) * len(array_shape)
        return tuple(None if m is None or a < m else int(a) for a, m in zip(array_shape, maxshape, strict=True))

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

    # -- random access --------------------------------------------------------------------
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
                f"reading region {format_region(region)}",
                f"the iterator returned no data within read_timeout={self.read_timeout:g} s; the read was abandoned",
            ) from None
        except BaseException as exc:
            if lock is not None and not started:  # the helper thread could not even start
                lock.release()
            if not isinstance(exc, Exception):
                raise
            raise ChunkWriteError(self.name, None, f"reading region {format_region(region)}", repr(exc)) from exc
        return _exactly(data, tuple(r.stop - r.start for r in region), self.name, region)

    # -- sequential -----------------------------------------------------------------------
    def buffers(self) -> Iterator[tuple[Region, np.ndarray]]:
        """The buffers of a sequential iterator as (region, data) pairs, in its order.

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
                    after = "" if last is None else f", the one after region {format_region(last)}"
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

    def coalesced_buffers(self, unit_rows: int) -> Iterator[tuple[Region, np.ndarray]]:
        """:meth:`buffers`, with runs that continue each other joined (:func:`coalesce`)."""
        return coalesce(self.buffers(), unit_rows, COALESCE_BYTES)

    def _normalize(self, chunk: DataChunk) -> tuple[Region, np.ndarray]:
        """A ``DataChunk`` as a region of plain slices and its data in the dataset's dtype."""
        data = np.asarray(chunk.data, dtype=self.dtype)
        selection = chunk.selection if isinstance(chunk.selection, tuple) else (chunk.selection,)
        region = []
        for axis in range(self.ndim):
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

    # -- pickling -------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for derived in ("_read_lock", "stop"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._read_lock = None if self.concurrent_reads else threading.Lock()


def _exactly(data: np.ndarray, shape: tuple[int, ...], name: str, region: Region) -> np.ndarray:
    """``data`` as the region's shape; an iterator that returned more or fewer values is an error,
    never padded with the fill value (axes of length 1 may differ, as from a squeezed column)."""
    if data.shape == shape:
        return data
    if data.size == math.prod(shape) and [n for n in data.shape if n != 1] == [n for n in shape if n != 1]:
        return data.reshape(shape)
    raise ChunkWriteError(
        name,
        None,
        f"reading region {format_region(region)}",
        f"the iterator returned shape {data.shape}, expected {shape}",
    )


# -- joining sequential buffers ----------------------------------------------------------------
def coalesce(
    buffers: Iterator[tuple[Region, np.ndarray]], unit_rows: int, max_bytes: int
) -> Iterator[tuple[Region, np.ndarray]]:
    """Join runs of buffers that continue each other along axis 0 (same extent on the other
    axes) into blocks of up to ``max_bytes`` within one row of units, in order.

    hdmf's ``DataChunkIterator`` hands out one row per buffer unless told otherwise, and
    staging a buffer costs the same Python work whatever its size: joined, thousands of
    one-row buffers cost a handful of adds. A block never reaches into the next row of units
    (``unit_rows`` long on axis 0), so units are staged and released in the same order as
    without joining, and the memory bound holds the same way. Buffers that overlap, skip ahead
    or change the other axes pass on as they are.
    """
    run: list[np.ndarray] = []
    first: Region | None = None
    last: Region | None = None
    size = 0
    for region, data in buffers:
        if (
            last is not None
            and region[0].start == last[0].stop
            and region[1:] == last[1:]
            and size + data.nbytes <= max_bytes
            and (region[0].stop - 1) // unit_rows == first[0].start // unit_rows
        ):
            run.append(data)
            size += data.nbytes
            last = region
            continue
        if run:
            yield _joined(first, last, run)
        run, first, last, size = [data], region, region, data.nbytes
    if run:
        yield _joined(first, last, run)


def coalesced(
    pattern: BufferPattern, unit_rows: int, length: int | None, row_nbytes: int, max_bytes: int
) -> BufferPattern:
    """The buffer pattern the assembler sees once :func:`coalesce` has joined ``pattern``'s buffers.

    Buffers along axis 0 of ``length`` rows (``None``: unknown) join into whole rows of units
    when no buffer straddles two rows of units and one row of units (``unit_rows`` rows of
    ``row_nbytes``) fits into ``max_bytes``; any other pattern stays as it is.
    """
    rows = unit_rows if length is None else min(unit_rows, length)
    straddles = unit_rows % pattern.size != 0 and (length is None or length > unit_rows)
    if pattern.axis == 0 and not straddles and rows * row_nbytes <= max_bytes:
        return BufferPattern(0, unit_rows)
    return pattern


def _joined(first: Region, last: Region, run: list[np.ndarray]) -> tuple[Region, np.ndarray]:
    region = (slice(first[0].start, last[0].stop), *first[1:])
    return region, run[0] if len(run) == 1 else np.concatenate(run, axis=0)
