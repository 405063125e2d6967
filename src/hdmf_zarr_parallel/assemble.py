"""Assemble whole write units from the buffers of a sequential iterator.

A ``DataChunkIterator`` hands out buffers in its own order and shape; they rarely
match the zarr chunk grid. Each unit is staged in its own full-size buffer until
every element it covers has arrived, and only then handed on to be encoded, so a
unit is always encoded once, whole, by one owner (invariant 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .plan import Coords, Region, UnitGrid, region_size


@dataclass
class _StagedUnit:
    data: np.ndarray
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

    def __post_init__(self) -> None:
        self.extent = [0] * len(self.unit_shape)

    def _grid(self) -> UnitGrid:
        # an unbounded axis is treated as reaching past every unit touched so far
        shape = tuple(
            b if b is not None else (e // u + 2) * u
            for b, e, u in zip(self.bounds, self.extent, self.unit_shape, strict=True)
        )
        return UnitGrid(shape, self.unit_shape)

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
            staged = self._staged.get(coords)
            if staged is None:
                staged = self._staged[coords] = _StagedUnit(np.full(self.unit_shape, self.fill_value, self.dtype))
            in_unit = tuple(
                slice(o.start - u.start, o.stop - u.start) for o, u in zip(overlap, unit_region, strict=True)
            )
            in_data = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region, strict=True))
            staged.data[in_unit] = data[in_data]
            staged.filled += region_size(overlap)
            if staged.filled == region_size(unit_region):
                del self._staged[coords]
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
