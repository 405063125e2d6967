"""Chunk-grid geometry: which array regions form the write units, and how to tile them.

A *write unit* is the smallest piece of an array that is stored under one key: the
chunk of an unsharded array, the shard of a sharded one. Every unit has exactly one
owner (a tile or the sequential assembler), which is what makes parallel writes safe.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Region = tuple[slice, ...]
Coords = tuple[int, ...]


@dataclass(frozen=True)
class UnitGrid:
    """The regular grid of write units over an array of ``shape``."""

    shape: tuple[int, ...]
    unit_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.unit_shape):
            raise ValueError(f"shape {self.shape} and unit shape {self.unit_shape} differ in rank")
        if any(u < 1 for u in self.unit_shape):
            raise ValueError(f"unit shape {self.unit_shape} must be positive")

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / u) for s, u in zip(self.shape, self.unit_shape, strict=True))

    @property
    def is_empty(self) -> bool:
        return any(s == 0 for s in self.shape)

    def unit_region(self, coords: Coords) -> Region:
        """The in-bounds region of one unit (smaller than ``unit_shape`` at the edges)."""
        return tuple(
            slice(c * u, min((c + 1) * u, s)) for c, u, s in zip(coords, self.unit_shape, self.shape, strict=True)
        )

    def all_units(self) -> Iterator[Coords]:
        return itertools.product(*(range(n) for n in self.grid_shape))

    def units_overlapping(self, region: Region) -> Iterator[Coords]:
        """Units that overlap ``region`` (for a unit-aligned region: the units it holds)."""
        ranges = (range(r.start // u, math.ceil(r.stop / u)) for r, u in zip(region, self.unit_shape, strict=True))
        return itertools.product(*ranges)

    def tiles(self, tile_units: tuple[int, ...]) -> Iterator[Region]:
        """Unit-aligned regions of ``tile_units`` units per axis covering the array in C order."""
        steps = [t * u for t, u in zip(tile_units, self.unit_shape, strict=True)]
        starts = (range(0, s, step) for s, step in zip(self.shape, steps, strict=True))
        for origin in itertools.product(*starts):
            yield tuple(slice(o, min(o + step, s)) for o, step, s in zip(origin, steps, self.shape, strict=True))


def region_size(region: Region) -> int:
    return math.prod(r.stop - r.start for r in region)


def format_region(region: Region) -> str:
    """A region as error messages name it: ``[0:100, 0:8]``."""
    return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"


def choose_tile_units(
    grid: UnitGrid, buffer_shape: tuple[int, ...] | None, itemsize: int, target_bytes: int
) -> tuple[int, ...]:
    """Pick how many units each tile spans per axis.

    Tiles follow the iterator's buffer shape (rounded up to whole units, so no unit
    is split between tiles) and are then halved along the slowest-varying axis that
    still spans several units until one tile fits ``target_bytes``: big iterator
    buffers would otherwise leave too few tasks to keep the workers busy.
    """
    grid_shape = grid.grid_shape
    if buffer_shape is None:
        counts = [1] * len(grid_shape)
    else:
        counts = [
            max(1, min(n, math.ceil(b / u))) for b, u, n in zip(buffer_shape, grid.unit_shape, grid_shape, strict=True)
        ]
    return fit_units(counts, math.prod(grid.unit_shape) * itemsize, target_bytes)


def fit_units(counts: Sequence[int], unit_bytes: int, target_bytes: int) -> tuple[int, ...]:
    """``counts`` units per axis, halved along the slowest-varying axis that still spans several
    units until they fit ``target_bytes`` (or are down to one unit)."""
    counts = list(counts)
    while math.prod(counts) * unit_bytes > target_bytes and any(c > 1 for c in counts):
        axis = next(i for i, c in enumerate(counts) if c > 1)
        counts[axis] = math.ceil(counts[axis] / 2)
    return tuple(counts)
