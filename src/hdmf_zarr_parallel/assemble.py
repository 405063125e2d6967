"""Assemble whole write units from the buffers of a sequential iterator.

A ``DataChunkIterator`` hands out buffers in its own order and shape; they rarely
match the zarr chunk grid. Each unit is staged in its own full-size buffer until
every element it covers has arrived, and only then handed on to be encoded, so a
unit is always encoded once, whole, by one owner (invariant 2). A mask of the
elements received makes "every element" exact when buffers overlap (the later
value wins, as with stock's one ``dset[selection] = data`` per buffer); a buffer
that reaches into a unit already complete and stored is refused.
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


@dataclass
class UnitAssembler:
    """Stages the units touched by incoming buffers and releases the complete ones.

    ``bounds`` holds, per axis, the extent known to be final, or ``None`` for an axis
    that may still grow (a generator of unknown length); a unit on a growing edge is
    only complete when it is full, or when :meth:`finish` fixes the final shape.
    """

    unit_shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: object
    bounds: tuple[int | None, ...]
    extent: list[int] = field(init=False)
    _staged: dict[Coords, _StagedUnit] = field(init=False, default_factory=dict)
    _released: np.ndarray = field(init=False)  # bool per unit of the grid: complete and handed on

    def __post_init__(self) -> None:
        self.extent = [0] * len(self.unit_shape)
        self._released = np.zeros((0,) * len(self.unit_shape), dtype=bool)

    def _was_released(self, coords: Coords) -> bool:
        return all(c < n for c, n in zip(coords, self._released.shape, strict=True)) and bool(self._released[coords])

    def _mark_released(self, coords: Coords) -> None:
        if any(c >= n for c, n in zip(coords, self._released.shape, strict=True)):  # grow, doubling, to hold it
            shape = tuple(max(n, 2 * c + 1) for c, n in zip(coords, self._released.shape, strict=True))
            grown = np.zeros(shape, dtype=bool)
            grown[tuple(slice(0, n) for n in self._released.shape)] = self._released
            self._released = grown
        self._released[coords] = True

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

    def new_units(self, region: Region) -> list[Coords]:
        """Units that ``region`` touches and that are not staged yet (to budget their memory)."""
        return [c for c in UnitGrid(_stops(region), self.unit_shape).units_overlapping(region) if c not in self._staged]

    def add(self, region: Region, data: np.ndarray) -> Iterator[tuple[Coords, np.ndarray]]:
        """Copy one buffer into its staged units; yields the units it completed."""
        for axis, r in enumerate(region):
            bound = self.bounds[axis]
            if bound is not None and r.stop > bound:
                raise ValueError(f"buffer {region} reaches past the dataset shape {self.bounds}")
            self.extent[axis] = max(self.extent[axis], r.stop)
        grid = self._grid()
        for coords in grid.units_overlapping(region):
            unit_region = grid.unit_region(coords)
            overlap = tuple(
                slice(max(r.start, u.start), min(r.stop, u.stop)) for r, u in zip(region, unit_region, strict=True)
            )
            if self._was_released(coords):
                raise ValueError(
                    f"buffer {region} writes into chunk {coords}, which earlier buffers already completed and "
                    "which is stored: a sequential iterator must deliver each chunk's data before moving past it"
                )
            staged = self._staged.get(coords)
            if staged is None:
                staged = self._staged[coords] = _StagedUnit(
                    np.full(self.unit_shape, self.fill_value, self.dtype), np.zeros(self.unit_shape, bool)
                )
            in_unit = tuple(
                slice(o.start - u.start, o.stop - u.start) for o, u in zip(overlap, unit_region, strict=True)
            )
            in_data = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region, strict=True))
            staged.data[in_unit] = data[in_data]
            received = staged.received[in_unit]
            staged.filled += received.size - int(np.count_nonzero(received))  # elements new to this unit
            received[...] = True
            if staged.filled == region_size(unit_region):
                del self._staged[coords]
                self._mark_released(coords)
                yield coords, staged.data

    def final_shape(self) -> tuple[int, ...]:
        return tuple(b if b is not None else e for b, e in zip(self.bounds, self.extent, strict=True))

    def finish(self) -> Iterator[tuple[Coords, np.ndarray]]:
        """Release every unit still staged; where no data came it holds the fill value."""
        for coords in sorted(self._staged):
            yield coords, self._staged.pop(coords).data

    @property
    def staged_count(self) -> int:
        return len(self._staged)


def _stops(region: Region) -> tuple[int, ...]:
    return tuple(r.stop for r in region)


def coalesce(
    buffers: Iterator[tuple[Region, np.ndarray]], unit_rows: int, max_bytes: int
) -> Iterator[tuple[Region, np.ndarray]]:
    """Join runs of buffers that continue each other along axis 0 (same extent on the other
    axes) into blocks of up to ``max_bytes`` within one row of units, in order.

    hdmf's ``DataChunkIterator`` hands out one row per buffer unless told otherwise, and
    staging a buffer costs the same Python work whatever its size: joined, 20,000 one-row
    buffers cost a handful of adds instead of 20,000 (benchmarks/RESULTS.md). A block never
    reaches into the next row of units (``unit_rows`` long on axis 0), so units are staged
    and released in the same order as without joining, and the memory bound holds the same
    way. Buffers that overlap, skip ahead or change the other axes pass on as they are.
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


def _joined(first: Region, last: Region, run: list[np.ndarray]) -> tuple[Region, np.ndarray]:
    region = (slice(first[0].start, last[0].stop), *first[1:])
    return region, run[0] if len(run) == 1 else np.concatenate(run, axis=0)
