"""Assemble whole write units from the buffers of a sequential iterator.

A ``DataChunkIterator`` hands out buffers in its own order and shape; they rarely
match the zarr chunk grid. Each unit is staged in its own full-size buffer until
every element it covers has arrived, and only then handed on to be encoded, so a
unit is always encoded once, whole, by one owner (invariant 2). A mask of the
elements received makes "every element" exact when buffers overlap (the later
value wins, as with stock's one ``dset[selection] = data`` per buffer); a buffer
that reaches into a unit already complete and stored is refused. Completed units are
remembered in a sparse :class:`UnitSet`, so a buffer far into a huge array costs nothing
for the units before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .plan import Coords, Region, UnitGrid, region_size


@dataclass
class _StagedUnit:
    data: np.ndarray
    received: np.ndarray  # bool per element: has any buffer delivered it yet
    filled: int = 0


class UnitSet:
    """A set of unit coordinates kept as bitmaps of fixed blocks of the unit grid, made only
    where units are: its memory follows the units added, not how far into the grid they lie."""

    BLOCK_UNITS = 4096

    def __init__(self, ndim: int) -> None:
        self._side = max(1, round(self.BLOCK_UNITS ** (1 / ndim))) if ndim else 1
        self._ndim = ndim
        self._blocks: dict[Coords, np.ndarray] = {}

    def __contains__(self, coords: Coords) -> bool:
        block = self._blocks.get(tuple(c // self._side for c in coords))
        return block is not None and bool(block[tuple(c % self._side for c in coords)])

    def add(self, coords: Coords) -> None:
        key = tuple(c // self._side for c in coords)
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = np.zeros((self._side,) * self._ndim, dtype=bool)
        block[tuple(c % self._side for c in coords)] = True


@dataclass
class UnitAssembler:
    """Stages the units touched by incoming buffers and releases the complete ones.

    ``bounds`` holds, per axis, the extent known to be final, or ``None`` for an axis
    that may still grow (a generator of unknown length); a unit on a growing edge is
    only complete when it is full, or when :meth:`finish` fixes the final shape.

    A buffer is taken one unit at a time, in C order (:meth:`begin`, then :meth:`put` per
    unit), so that a large buffer never needs all its units staged at once: each unit is
    handed on as soon as it is complete, and :func:`peak_open_units` can say in advance
    how many a regular iterator keeps staged.
    """

    unit_shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: object
    bounds: tuple[int | None, ...]
    extent: list[int] = field(init=False)
    _staged: dict[Coords, _StagedUnit] = field(init=False, default_factory=dict)
    _released: UnitSet = field(init=False)  # units complete and handed on
    _current: UnitGrid = field(init=False)  # the grid as known since the latest buffer

    def __post_init__(self) -> None:
        self.extent = [0] * len(self.unit_shape)
        self._released = UnitSet(len(self.unit_shape))
        self._current = self._grid()

    def _grid(self) -> UnitGrid:
        # an unbounded axis is treated as reaching past every unit touched so far
        shape = tuple(
            b if b is not None else (e // u + 2) * u
            for b, e, u in zip(self.bounds, self.extent, self.unit_shape, strict=True)
        )
        return UnitGrid(shape, self.unit_shape)

    @property
    def staging_nbytes(self) -> int:
        """Memory one staged unit holds: its data and its mask of received elements."""
        elements = math.prod(self.unit_shape)
        return elements * np.dtype(self.dtype).itemsize + elements

    def begin(self, region: Region) -> list[Coords]:
        """Check one buffer's region against the bounds, extend the known extent, and list the
        units it touches, in C order (the order to :meth:`put` it in)."""
        for axis, r in enumerate(region):
            bound = self.bounds[axis]
            if bound is not None and r.stop > bound:
                raise ValueError(f"buffer {region} reaches past the dataset shape {self.bounds}")
            self.extent[axis] = max(self.extent[axis], r.stop)
        self._current = self._grid()
        return list(self._current.units_overlapping(region))

    def opens(self, coords: Coords, region: Region) -> bool:
        """Whether putting buffer ``region`` into unit ``coords`` stages that unit anew (so its
        memory is to be budgeted first); refuses a unit that is already complete and stored."""
        if coords in self._released:
            raise ValueError(
                f"buffer {region} writes into chunk {coords}, which earlier buffers already completed and "
                "which is stored: a sequential iterator must deliver each chunk's data before moving past it"
            )
        return coords not in self._staged

    def put(self, coords: Coords, region: Region, data: np.ndarray) -> np.ndarray | None:
        """Copy the part of buffer ``region`` (values ``data``) that falls in unit ``coords``;
        returns the unit's data when that completed it."""
        self.opens(coords, region)
        unit_region = self._current.unit_region(coords)
        overlap = tuple(
            slice(max(r.start, u.start), min(r.stop, u.stop)) for r, u in zip(region, unit_region, strict=True)
        )
        staged = self._staged.get(coords)
        if staged is None:
            staged = self._staged[coords] = _StagedUnit(
                np.full(self.unit_shape, self.fill_value, self.dtype), np.zeros(self.unit_shape, bool)
            )
        in_unit = tuple(slice(o.start - u.start, o.stop - u.start) for o, u in zip(overlap, unit_region, strict=True))
        in_data = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region, strict=True))
        staged.data[in_unit] = data[in_data]
        received = staged.received[in_unit]
        staged.filled += received.size - int(np.count_nonzero(received))  # elements new to this unit
        received[...] = True
        if staged.filled < region_size(unit_region):
            return None
        del self._staged[coords]
        self._released.add(coords)
        return staged.data

    def add(self, region: Region, data: np.ndarray) -> Iterator[tuple[Coords, np.ndarray]]:
        """Copy one buffer into its staged units; yields the units it completed."""
        for coords in self.begin(region):
            unit = self.put(coords, region, data)
            if unit is not None:
                yield coords, unit

    def final_shape(self) -> tuple[int, ...]:
        return tuple(b if b is not None else e for b, e in zip(self.bounds, self.extent, strict=True))

    def finish(self) -> Iterator[tuple[Coords, np.ndarray]]:
        """Release every unit still staged; where no data came it holds the fill value."""
        for coords in sorted(self._staged):
            yield coords, self._staged.pop(coords).data

    @property
    def staged_count(self) -> int:
        return len(self._staged)


@dataclass(frozen=True)
class BufferPattern:
    """How a ``DataChunkIterator`` cuts its data: ``size`` elements at a time along ``axis``,
    one buffer after another from the start, each whole along every other axis."""

    axis: int
    size: int


def peak_open_units(unit_shape: tuple[int, ...], bounds: tuple[int | None, ...], pattern: BufferPattern) -> int | None:
    """The most units an :class:`UnitAssembler` holds staged at once (the one being opened
    included) for buffers cut as ``pattern`` says; ``None`` where that cannot be known.

    A unit opens with the first buffer that touches it and closes with the one that brings its
    last element. Where every buffer starts and ends on a unit boundary along ``axis`` (or at
    the end), each unit opens and closes within one buffer: one is staged at a time. Else some
    buffer ends inside a *band* (the units that share one index along ``axis``), and that whole
    band stays open until the next buffer; visited in C order, the band that closes and the
    one that opens overlap by at most one unit, so the peak is one band. A length not known in
    advance (a ``None`` bound along ``axis``) may end inside a band, which then stays open to the end.
    """
    length = bounds[pattern.axis]
    others = [(b, u) for axis, (b, u) in enumerate(zip(bounds, unit_shape, strict=True)) if axis != pattern.axis]
    if any(b is None for b, _ in others):
        return None
    band = math.prod(math.ceil(b / u) for b, u in others)
    if band == 0 or length == 0:
        return 0
    aligned = length is not None and (pattern.size % unit_shape[pattern.axis] == 0 or length <= pattern.size)
    return 1 if aligned else band
