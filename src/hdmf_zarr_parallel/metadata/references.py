"""Datasets of object references written in one go instead of one element at a time.

hdmf-zarr 0.14 stores a dataset of object references (an electrodes table's ``group``
column, for example) as a string array of paths, written element by element
(``dset[i] = path``). Each element is a read-modify-write of the whole chunk, so a table of
n electrodes costs n chunk rewrites, most of a typical NWB file's metadata time
(benchmarks/HISTORY.md). :func:`collecting_group` hands hdmf-zarr a parent group whose new
arrays collect those element writes; :meth:`CollectingGroup.flush` stores each array once.
The final chunks hold the same bytes as the element-by-element writes leave behind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from .._zarr import async_group


class CollectingArray(zarr.Array):
    """A zarr array that keeps single-element string writes until :meth:`flush`."""

    _pending: dict[int, str]

    @classmethod
    def wrap(cls, array: zarr.Array) -> CollectingArray:
        collecting = cls(array.async_array)
        collecting._pending = {}
        return collecting

    def __setitem__(self, selection: Any, value: Any) -> None:
        if isinstance(selection, (int, np.integer)) and isinstance(value, str) and self.ndim == 1:
            self._pending[int(selection) % self.shape[0]] = value
            return
        self.flush()
        super().__setitem__(selection, value)

    def flush(self) -> None:
        """Store the collected elements: one write when they fill the array, else one each."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        if len(pending) == self.shape[0]:
            super().__setitem__(slice(None), np.array([pending[i] for i in range(self.shape[0])], dtype=self.dtype))
            return
        for index, value in pending.items():
            super().__setitem__(index, value)


class CollectingGroup(zarr.Group):
    """A view of a zarr group whose ``require_array`` returns :class:`CollectingArray` s."""

    _arrays: list[CollectingArray]

    def require_array(self, name: str, **kwargs: Any) -> CollectingArray:
        array = CollectingArray.wrap(super().require_array(name, **kwargs))
        self._arrays.append(array)
        return array

    def flush(self) -> None:
        for array in self._arrays:
            array.flush()
        self._arrays.clear()


def collecting_group(group: zarr.Group) -> CollectingGroup:
    """The same group (same store and path) with collecting arrays."""
    collecting = CollectingGroup(async_group(group))
    object.__setattr__(collecting, "_arrays", [])  # Group is a frozen dataclass
    return collecting
