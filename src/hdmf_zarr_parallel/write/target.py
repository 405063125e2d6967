"""A dataset's target: one zarr array, its grid of write units, its encoder and its sink.

Whatever engine runs a task, a unit ends here the same way: encoded with the array's own
codecs (:mod:`..cpu.unit`, or on the GPU by :mod:`..gpu.datapath`) and stored under its key
by :class:`~.sink.ChunkSink`, and a failure of either names the dataset, the unit and the
stage. A target pickles alone, without the dataset's iterator: Dask sends it to the workers
that only encode and store the units a sequential iterator's feeder assembled.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np
import zarr

from ..cpu.native import NativeUnitFiles
from ..cpu.unit import RowEncodeError, ZarrUnitEncoder
from ..errors import ChunkWriteError
from .assemble import UnitAssembler
from .budget import WriteCancelled
from .plan import Coords, Region, UnitGrid, fit_units, region_size
from .sink import Blob, ChunkSink, LocalFileSink, make_sink

Units = Sequence[tuple[Coords, np.ndarray]]

#: at most this many bytes of a tile's whole units are copied out together (:meth:`DatasetTarget.store_region`)
BLOCK_BYTES = 16 << 20


class DatasetTarget:
    """Where one dataset's data goes: the part ``shape`` of ``array``, cut into write units
    (its shards when sharded, else its chunks)."""

    stop: threading.Event | None = None  # the write's stop flag, set by bind(); never pickled

    def __init__(self, array: zarr.Array, shape: tuple[int, ...]) -> None:
        self.array = array
        self.name = array.path or array.name or "<root>"
        self.dtype = np.dtype(array.dtype)
        self.unit_shape: tuple[int, ...] = tuple(array.shards or array.chunks)
        self.shape = tuple(shape)

    def bind(self, stop: threading.Event) -> None:
        """Join a write: once ``stop`` is set nothing more is stored (a worker that comes back
        late from a stuck read stores nothing)."""
        self.stop = stop

    # -- geometry -------------------------------------------------------------------------
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
    def unit_kind(self) -> str:
        return "shard" if self.array.shards else "chunk"

    def region_nbytes(self, region: Region) -> int:
        return region_size(region) * self.dtype.itemsize

    def assembler(self, bounds: tuple[int | None, ...]) -> UnitAssembler:
        """An assembler of whole units from sequential buffers, within ``bounds`` (see :mod:`.assemble`)."""
        return UnitAssembler(self.unit_shape, self.dtype, self.array.metadata.fill_value, bounds)

    # -- encode and store -----------------------------------------------------------------
    @cached_property
    def encoder(self) -> ZarrUnitEncoder:
        return ZarrUnitEncoder(self.array)

    @cached_property
    def sink(self) -> ChunkSink:
        return make_sink(self.array, self.name, self.stop)

    def encode_unit(self, coords: Coords, data: np.ndarray) -> Blob:
        """One whole unit's encoded bytes (``None``: all fill value, its key is deleted)."""
        try:
            return self.encoder.encode(data)
        except Exception as exc:
            raise ChunkWriteError(self.name, coords, "encoding", repr(exc)) from exc

    def encode_block(self, coords: Sequence[Coords], rows: np.ndarray) -> list[Blob]:
        """The encoded bytes of whole units laid out as the rows of one matrix (``coords``: theirs)."""
        try:
            return self.encoder.encode_rows(rows)
        except RowEncodeError as exc:
            cause = exc.__cause__
            raise ChunkWriteError(self.name, coords[exc.index], "encoding", repr(cause)) from cause

    def store_region(self, region: Region, data: np.ndarray) -> None:
        """Encode the units of a unit-aligned region (its ``data``), then store them in one batch.

        Whole units are taken a block at a time: one numpy copy (which releases the GIL) lays up
        to ``BLOCK_BYTES`` of them out as the encoder takes them (``ZarrUnitEncoder.block_rows``)
        and the encoder runs through the rows in one loop; units cut by the array's edge are
        encoded one by one (padded as zarr pads them). One copy per block and no per-unit
        slicing keep what a worker runs per unit, and so holds the GIL for, small.
        """
        self.check_stop()
        unit_shape = self.unit_shape
        first = tuple(r.start // u for r, u in zip(region, unit_shape, strict=True))
        extents = tuple(r.stop - r.start for r in region)
        whole_units = tuple(e // u for e, u in zip(extents, unit_shape, strict=True))
        block = fit_units([max(1, n) for n in whole_units], self.unit_nbytes, BLOCK_BYTES)
        segments = []  # per axis: (first unit, units) of each block, the unit cut by the edge alone
        for n, b, e, u in zip(whole_units, block, extents, unit_shape, strict=True):
            segments.append([(o, min(b, n - o)) for o in range(0, n, b)] + ([(n, 1)] if n * u < e else []))
        blobs: list[tuple[Coords, Blob]] = []
        for segment in itertools.product(*segments):
            origin, sizes = tuple(o for o, _ in segment), tuple(k for _, k in segment)
            ranges = (range(f + o, f + o + k) for f, o, k in zip(first, origin, sizes, strict=True))
            coords = list(itertools.product(*ranges))
            at = tuple(o * u for o, u in zip(origin, unit_shape, strict=True))
            whole = tuple(k * u for k, u in zip(sizes, unit_shape, strict=True))
            slab = data[tuple(slice(a, a + w) for a, w in zip(at, whole, strict=True))]
            if slab.shape == whole and slab.ndim:
                rows = self.encoder.block_rows(slab, sizes)
                if self.native is not None:
                    blobs.extend(self._store_natively(coords, rows))
                else:
                    blobs.extend(zip(coords, self.encode_block(coords, rows), strict=True))
                continue
            for c in coords:  # a block at the array's edge
                cut = tuple(slice((i - f) * u, (i - f + 1) * u) for i, f, u in zip(c, first, unit_shape, strict=True))
                blobs.append((c, self.encode_unit(c, data[cut])))
        self.sink.put_many(blobs)

    @cached_property
    def native(self) -> NativeUnitFiles | None:
        """zstd chunks or shards of a large dataset in a plain local store, with numba installed:
        a block's units compressed and written in one call that releases the GIL (``cpu/native.py``)."""
        layout = self.encoder.native_layout
        if layout is None or not isinstance(self.sink, LocalFileSink):
            return None
        return NativeUnitFiles.make(*layout, self.nbytes)

    def _store_natively(self, coords: Sequence[Coords], rows: np.ndarray) -> list[tuple[Coords, Blob]]:
        """Write a block's units through :attr:`native`; returns what is left for the sink's batch:
        the keys of units zarr would not store (all fill value) to delete and, after a failure,
        that unit and the rest, encoded here (the sink then raises what the OS says, naming the key)."""
        matrix, skip = self.encoder.stored_rows(rows)
        empty = None if skip is None else skip.reshape(len(coords), -1).all(axis=1)
        todo = list(range(len(coords))) if empty is None else np.flatnonzero(~empty).tolist()
        left: list[tuple[Coords, Blob]] = [] if empty is None else [(coords[i], None) for i in np.flatnonzero(empty)]
        paths, tmps = self.sink.files([coords[i] for i in todo])
        done = self.native.write(matrix, skip, todo, tmps, paths)
        if done < len(todo):
            rest = todo[done:]
            again = [coords[i] for i in rest]
            left.extend(zip(again, self.encode_block(again, rows[rest]), strict=True))
        return left

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise WriteCancelled

    def store_units(self, units: Iterable[tuple[Coords, np.ndarray]]) -> None:
        """Encode whole units, then store them in one batch (one event-loop hop for async stores);
        nothing once the write is stopping. The sink names dataset, unit and key on a store failure."""
        self.check_stop()
        self.sink.put_many([(coords, self.encode_unit(coords, data)) for coords, data in units])

    def write_units(self, units: Units) -> int:
        """Encode and store whole units (assembled from a sequential iterator); returns their in-memory size."""
        self.store_units(units)
        return sum(data.nbytes for _, data in units)

    # -- finalize ---------------------------------------------------------------------------
    def grow_to(self, shape: tuple[int, ...]) -> bool:
        """Resize the array when a sequential iterator delivered more than it announced."""
        if not any(s > a for s, a in zip(shape, self.array.shape, strict=True)):
            return False
        new_shape = tuple(max(s, a) for s, a in zip(shape, self.array.shape, strict=True))
        self.array.resize(new_shape)
        self.shape = new_shape
        self.__dict__.pop("grid", None)
        return True

    # -- pickling ---------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for derived in ("encoder", "sink", "native", "grid", "stop"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
