"""Read regions of HDF5 datasets outside h5py's lock, so that many workers read at once.

h5py serialises every call into libhdf5 with one global lock, and libhdf5 runs the
filter pipeline (gzip decompression) and the copy out of the file inside that call.
Engine workers that read an NWB HDF5 dataset through ``dataset[selection]`` therefore
read one at a time, however many cores there are. Two readers avoid that:

* :class:`ContiguousReader`: a contiguous, unfiltered dataset in a local file is
  memory-mapped read-only at its offset; threads copy from the map concurrently.
* :class:`DirectChunkReader`: for a chunked dataset filtered by deflate (gzip) and/or
  shuffle, only the raw read of each HDF5 chunk (``read_direct_chunk``) holds the lock;
  inflating and unshuffling run in the calling thread, without the GIL. Inflating uses
  ISA-L (``isal``) where installed: the same bytes as ``zlib``, in less time (measured in
  ``benchmarks/HISTORY.md``, "Inflating HDF5 chunks with ISA-L").

:func:`direct_reader` picks one, or returns ``None`` (other filters, layouts, drivers or
dtypes), and the caller reads through h5py as before. :class:`H5DatasetIterator` is the
iterator ``convert`` streams an HDF5 dataset through: a direct reader where one applies.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .reopening import NamedDatasetIterator

try:
    from isal.isal_zlib import decompress as inflate
except ImportError:  # a platform without an isal wheel: the standard library's zlib
    from zlib import decompress as inflate

H5Z_FILTER_DEFLATE = 1
H5Z_FILTER_SHUFFLE = 2
SUPPORTED_FILTERS = frozenset({H5Z_FILTER_DEFLATE, H5Z_FILTER_SHUFFLE})

Bounds = tuple[tuple[int, int], ...]  # (start, stop) per axis


def direct_reader(dataset: Any) -> DirectReader | None:
    """A reader of ``dataset`` that works outside h5py's lock, or ``None`` where h5py must read it."""
    dtype = np.dtype(dataset.dtype)
    if dtype.kind not in "biuf" or dtype.fields is not None or dataset.ndim == 0:
        return None
    return ContiguousReader.for_dataset(dataset) or DirectChunkReader.for_dataset(dataset)


class DirectReader(ABC):
    """Reads regions of one numeric HDF5 dataset, from any number of threads at once."""

    shape: tuple[int, ...]
    how: str  # for reports: how the data is read

    def bounds(self, selection: Any) -> Bounds | None:
        """(start, stop) per axis of a selection of unit-step slices, or ``None`` for any other selection."""
        selection = selection if isinstance(selection, tuple) else (selection,)
        if len(selection) > len(self.shape) or not all(isinstance(s, slice) for s in selection):
            return None
        selection = selection + (slice(None),) * (len(self.shape) - len(selection))
        steps = [s.indices(n) for s, n in zip(selection, self.shape, strict=True)]
        if any(step != 1 for _, _, step in steps):
            return None
        return tuple((start, max(start, stop)) for start, stop, _ in steps)

    @abstractmethod
    def read(self, bounds: Bounds) -> np.ndarray:
        """The values within ``bounds`` (from :meth:`bounds`), as ``dataset[selection]`` gives them."""


class ContiguousReader(DirectReader):
    """A contiguous, unfiltered dataset of a local HDF5 file, memory-mapped read-only."""

    how = "memory map"

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self._map = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)

    @classmethod
    def for_dataset(cls, dataset: Any) -> ContiguousReader | None:
        if dataset.chunks is not None or dataset.external or dataset.file.driver != "sec2":
            return None
        offset = dataset.id.get_offset()  # None until the data is written: h5py gives the fill value
        if offset is None:
            return None
        return cls(dataset.file.filename, offset, tuple(dataset.shape), np.dtype(dataset.dtype))

    def read(self, bounds: Bounds) -> np.ndarray:
        return np.array(self._map[tuple(slice(start, stop) for start, stop in bounds)])


class DirectChunkReader(DirectReader):
    """A chunked HDF5 dataset filtered by deflate and/or shuffle (or by nothing)."""

    how = "raw HDF5 chunks, decoded by the workers"

    def __init__(self, dataset: Any, filters: tuple[int, ...]) -> None:
        self._dsid = dataset.id
        self.shape: tuple[int, ...] = tuple(dataset.shape)
        self.chunks: tuple[int, ...] = tuple(dataset.chunks)
        self.dtype = np.dtype(dataset.dtype)
        self.fill_value = dataset.fillvalue
        self.filters = filters  # in pipeline (write) order; decoded in reverse

    @classmethod
    def for_dataset(cls, dataset: Any) -> DirectChunkReader | None:
        """A reader for ``dataset``, or ``None`` when its layout or filters are not decoded here."""
        if dataset.chunks is None:
            return None
        if not hasattr(dataset.id, "get_chunk_info_by_coord"):  # h5py built on HDF5 < 1.10.5
            return None
        plist = dataset.id.get_create_plist()
        filters = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
        if not set(filters) <= SUPPORTED_FILTERS:
            return None
        return cls(dataset, filters)

    def read(self, bounds: Bounds) -> np.ndarray:
        out = np.empty(tuple(stop - start for start, stop in bounds), dtype=self.dtype)
        if out.size == 0:
            return out
        first = [start // c for (start, _), c in zip(bounds, self.chunks, strict=True)]
        last = [(stop - 1) // c for (_, stop), c in zip(bounds, self.chunks, strict=True)]
        for index in itertools.product(*(range(a, b + 1) for a, b in zip(first, last, strict=True))):
            origin = tuple(i * c for i, c in zip(index, self.chunks, strict=True))
            chunk = self._chunk(origin)
            inside, target = [], []
            for o, c, (start, stop) in zip(origin, self.chunks, bounds, strict=True):
                lo, hi = max(start, o), min(stop, o + c)
                inside.append(slice(lo - o, hi - o))
                target.append(slice(lo - start, hi - start))
            out[tuple(target)] = chunk[tuple(inside)]
        return out

    def _chunk(self, origin: tuple[int, ...]) -> np.ndarray:
        """One whole HDF5 chunk, decoded; the fill value where the chunk was never written."""
        if self._dsid.get_chunk_info_by_coord(origin).byte_offset is None:  # never written
            return np.full(self.chunks, self.fill_value, dtype=self.dtype)
        filter_mask, data = self._dsid.read_direct_chunk(origin)
        for position in reversed(range(len(self.filters))):
            if filter_mask & (1 << position):
                continue  # this chunk skipped that filter when it was written
            if self.filters[position] == H5Z_FILTER_DEFLATE:
                data = inflate(data)
            else:
                data = unshuffle(data, self.dtype.itemsize)
        return np.frombuffer(data, dtype=self.dtype, count=math.prod(self.chunks)).reshape(self.chunks)


def unshuffle(data: bytes, itemsize: int) -> np.ndarray:
    """Undo HDF5's byte shuffle, which stores byte k of every element together (k = 0 .. itemsize-1).

    One strided copy per byte position, rather than a transpose of the whole buffer (the slower
    first version, in ``benchmarks/HISTORY.md``).
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if itemsize == 1:
        return raw
    count = raw.size // itemsize
    out = np.empty_like(raw)
    for k in range(itemsize):
        out[k::itemsize] = raw[k * count : (k + 1) * count]
    return out


class H5DatasetIterator(NamedDatasetIterator):
    """Buffers of one HDF5 dataset; pickles by (file path, dataset name), the copy reopens the file.

    h5py serialises every read with one lock, decompression and copying included, so
    where the layout allows the workers read outside it, many at once (a memory map of a
    contiguous dataset, or raw HDF5 chunks they inflate themselves: :func:`direct_reader`);
    else through the ``h5py.Dataset``.
    """

    concurrent_reads = True  # h5py locks each call; direct reads share no state

    def __init__(self, path: str, name: str, dataset: Any = None, **kwargs: Any) -> None:
        self._file = None
        super().__init__(path, name, dataset, **kwargs)
        self._direct = direct_reader(self._dataset)

    def _open(self) -> Any:
        import h5py

        self._file = h5py.File(self.path, "r")
        return self._file[self.name]

    @property
    def reading(self) -> str:
        """How the workers read this dataset (for the conversion report)."""
        return self._direct.how if self._direct is not None else "h5py, one read at a time"

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        bounds = self._direct.bounds(selection) if self._direct is not None else None
        return self._direct.read(bounds) if bounds is not None else self._dataset[selection]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
