"""Store encoded write units under their zarr keys through the zarr store API."""

from __future__ import annotations

import threading

import zarr
from zarr.abc.buffer import Buffer

from .._zarr import chunk_key, supports_sync_io, sync
from .budget import WriteCancelled
from .plan import Coords


class ChunkSink:
    """Puts encoded units of one array into its store; ``None`` deletes the key as zarr does.

    Once ``stop`` is set, :meth:`put` raises ``WriteCancelled`` instead: a worker that comes
    back late (from a read that took too long) stores nothing after its write has ended."""

    def __init__(self, array: zarr.Array, stop: threading.Event | None = None) -> None:
        self._stop = stop
        self._store_path = array.store_path
        self._metadata = array.metadata
        self._sync_io = supports_sync_io(self._store_path.store)

    def key(self, coords: Coords) -> str:
        return chunk_key(self._metadata, coords)

    def put(self, coords: Coords, encoded: Buffer | None) -> None:
        if self._stop is not None and self._stop.is_set():
            raise WriteCancelled
        target = self._store_path / self.key(coords)
        if self._sync_io:
            if encoded is None:
                target.delete_sync()
            else:
                target.set_sync(encoded)
        elif encoded is None:
            sync(target.delete())
        else:
            sync(target.set(encoded))
