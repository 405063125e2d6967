"""Iterators over a file that pickle as the file's path, never as its data.

A worker process that receives one reopens the file. ``GenericDataChunkIterator.__reduce__``
pickles through ``_to_dict``/``_from_dict``, the pair stock hdmf-zarr checks before it uses a
process pool; ``__getstate__``/``__setstate__`` say the same for code that calls them directly.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from hdmf.data_utils import GenericDataChunkIterator


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


class NamedDatasetIterator(ReopensFromState, GenericDataChunkIterator):
    """Buffers of the dataset ``name`` of the file or store at ``path``; pickles by (path, name,
    chunk and buffer shapes), and the copy reopens it.

    ``dataset``: the dataset already open (``convert`` hands over the one its reader holds);
    ``None`` opens it with :meth:`_open`. Subclasses say how to open and read it.
    """

    concurrent_reads = True

    def __init__(self, path: str, name: str, dataset: Any = None, **kwargs: Any) -> None:
        self.path = str(path)
        self.name = name
        self._dataset = self._open() if dataset is None else dataset
        kwargs.setdefault("display_progress", False)
        super().__init__(**kwargs)

    def _open(self) -> Any:
        """The dataset ``self.name`` of the file at ``self.path``, opened read-only."""
        raise NotImplementedError

    def _get_maxshape(self) -> tuple[int, ...]:
        return tuple(self._dataset.shape)

    def _get_dtype(self) -> np.dtype:
        return np.dtype(self._dataset.dtype)

    def _to_dict(self) -> dict:
        return {
            "path": self.path,
            "name": self.name,
            "chunk_shape": tuple(self.chunk_shape),
            "buffer_shape": tuple(self.buffer_shape),
        }

    def close(self) -> None:
        """Release what :meth:`_open` opened (nothing by default)."""
