"""Iterators over a file that pickle as the file's path, never as its data.

A worker process that receives one reopens the file. ``GenericDataChunkIterator.__reduce__``
pickles through ``_to_dict``/``_from_dict``, the pair stock hdmf-zarr checks before it uses a
process pool; ``__getstate__``/``__setstate__`` say the same for code that calls them directly.
"""

from __future__ import annotations

from typing import Any, Self


class ReopensFromState:
    """Mixin, before ``GenericDataChunkIterator``, for an iterator whose ``_to_dict()`` returns
    its constructor's arguments (the file's path and the shapes)."""

    @classmethod
    def _from_dict(cls, dictionary: dict[str, Any]) -> Self:
        # the keyword is part of the contract: hdmf-zarr calls ``_from_dict(dictionary=...)``
        return cls(**dictionary)

    def __getstate__(self) -> dict[str, Any]:
        return self._to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)
