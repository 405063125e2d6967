"""An object's attributes stored with one metadata write instead of one per attribute.

hdmf-zarr 0.14 sets attributes one at a time (``obj.attrs[key] = value``). Each set rewrites
the object's ``zarr.json``, so an object with four attributes is written five times, for
every group and dataset of the file (benchmarks/HISTORY.md has what that costs). hdmf-zarr
relies on each set to raise ``TypeError`` for a value JSON cannot hold, and then retries
with a converted value.

:class:`AttributeRecorder` keeps that contract: it serializes every value the way zarr does
(the object's metadata with the new attribute, through :func:`~.._zarr.metadata_documents`),
so the same values raise the same error, and it writes nothing. :func:`store_recorded` then
stores the final values with one ``update_attributes``. The resulting ``zarr.json`` is the one
the attribute-by-attribute writes leave behind, and hdmf-zarr's handle sees the update.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import zarr

from .._zarr import async_group, metadata_documents


class AttributeRecorder:
    """Stands in for ``obj.attrs`` while hdmf-zarr sets attributes."""

    def __init__(self, obj: zarr.Group | zarr.Array) -> None:
        self._metadata = obj.metadata
        self.values: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        attributes = {**self._metadata.attributes, **self.values, key: value}
        metadata_documents(replace(self._metadata, attributes=attributes))
        self.values[key] = value


class _RecordingGroup(zarr.Group):
    @property
    def attrs(self) -> AttributeRecorder:  # type: ignore[override]
        return self._recorder


class _RecordingArray(zarr.Array):
    @property
    def attrs(self) -> AttributeRecorder:  # type: ignore[override]
        return self._recorder


def recording(obj: zarr.Group | zarr.Array) -> _RecordingGroup | _RecordingArray:
    """The same group or array, whose ``attrs`` records instead of writing."""
    if isinstance(obj, zarr.Group):
        stand_in = _RecordingGroup(async_group(obj))
    else:
        stand_in = _RecordingArray(obj.async_array)
    object.__setattr__(stand_in, "_recorder", AttributeRecorder(obj))  # Group is a frozen dataclass
    return stand_in


def store_recorded(obj: zarr.Group | zarr.Array, stand_in: _RecordingGroup | _RecordingArray) -> None:
    """Write what ``stand_in`` recorded into ``obj``: one metadata write, none when nothing was set."""
    values = stand_in._recorder.values
    if values:
        obj.update_attributes(values)  # not attrs.update: MutableMapping.update sets one key at a time
