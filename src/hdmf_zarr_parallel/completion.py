"""A store opens as complete only once its write has stored everything.

Every reader starts at the root ``zarr.json``: zarr-python parses it first, and hdmf-zarr
and PyNWB take from it the root's attributes (``neurodata_type``, ``namespace``,
``.specloc``, the cached spec's location) and the consolidated metadata. Stock hdmf-zarr,
with its default ``exhaust_dci=True``, writes each dataset's data inside ``write_dataset``
and the root's attributes only afterwards, at the end of ``write_builder``; so its partial
store has a root without them, and ``read()`` fails with "No data_type found for builder
root". (Stock with ``exhaust_dci=False`` already loses that: it writes the root's
attributes before the queued data, and its partial store reads as fill values.) Our writes
keep storing data while hdmf-zarr writes the root, caches the spec and consolidates, so the
root alone can no longer tell.

:class:`RootCommit` makes the root document the piece that is written last, as careful
storage formats write their commit record:

1. When hdmf-zarr starts writing the file (``write_builder``), the root ``zarr.json`` is
   replaced by a placeholder with an extension field whose ``must_understand`` is true. The
   Zarr v3 specification requires a reader to refuse metadata with such a field it does not
   know: zarr-python raises ``MetadataValidationError`` naming the field, and the field's
   name says the store is incomplete, so zarr-python, hdmf-zarr, PyNWB and every other v3
   reader refuse the store, and our IO classes raise :class:`~.errors.IncompleteStoreError`.
2. While the write runs, the root group's own metadata writes (hdmf-zarr's handle: its
   attributes, ``.specloc``) stay in memory; every other group, array and chunk is written
   as usual, and hdmf-zarr caches the spec as usual. Consolidation runs where stock runs its
   last one (after the spec cache, while data may still be written) with zarr's own
   ``consolidate_metadata``, through a view of the store in which the root document is the
   held one; its result is held too.
3. Once all the data is stored (the pipeline's ``finish()`` returned), the root document
   is stored with one ``set``; a ``LocalStore`` writes it to a temporary file and renames it
   into place, so it appears whole. A failure, Ctrl-C or SIGKILL before that leaves the
   placeholder. The completed store has the same documents as before.

This covers the death of the writing process. It does not order the data and the root on
disk across a power loss: zarr's ``LocalStore`` does not ``fsync``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import Any

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync
from zarr.errors import MetadataValidationError
from zarr.storage import WrapperStore

from .errors import IncompleteStoreError

ROOT_DOCUMENT = "zarr.json"
INCOMPLETE_FIELD = (
    "hdmf_zarr_parallel: this store is incomplete (its write failed, was interrupted or is still running)"
)
PLACEHOLDER = {
    "zarr_format": 3,
    "node_type": "group",
    "attributes": {},
    INCOMPLETE_FIELD: {
        "must_understand": True,
        "detail": "hdmf_zarr_parallel stores this group's metadata here only after the last chunk of its write; "
        "until then every Zarr v3 reader must refuse the store",
    },
}


def _buffer(data: bytes, prototype: BufferPrototype | None = None) -> Buffer:
    return (prototype or default_buffer_prototype()).buffer.from_bytes(data)


class _HeldRoot(AsyncGroup):
    """The root group of a write in progress: while it holds, its metadata stays in memory.

    zarr writes a group's own document only through ``_save_metadata`` (``update_attributes``
    first updates the metadata in place). Groups that zarr creates from this one are of this
    class too, and write through: only the root of a :class:`RootCommit` holds.
    """

    async def _save_metadata(self, ensure_parents: bool = False) -> None:
        if not getattr(self, "_holding", False):
            await super()._save_metadata(ensure_parents)


class _HeldRootView(WrapperStore[Store]):
    """The store as it will be once the write commits: its root document is the held one,
    and a root document written through the view is kept in :attr:`document`."""

    def __init__(self, store: Store, key: str, document: Buffer) -> None:
        super().__init__(store)
        self._key = key
        self.document = document

    @property
    def supports_consolidated_metadata(self) -> bool:
        return self._store.supports_consolidated_metadata

    def _held(self, prototype: BufferPrototype | None, byte_range: ByteRequest | None) -> Buffer:
        if byte_range is not None:
            raise NotImplementedError("a byte range of the held root document")
        return _buffer(self.document.to_bytes(), prototype)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key == self._key:
            return self._held(prototype, byte_range)
        return await self._store.get(key, prototype, byte_range)

    def get_sync(
        self, key: str, *, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key == self._key:
            return self._held(prototype, byte_range)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return key == self._key or await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        if key == self._key:
            self.document = value
        else:
            await self._store.set(key, value)

    def set_sync(self, key: str, value: Buffer) -> None:
        if key == self._key:
            self.document = value
        else:
            super().set_sync(key, value)


class RootCommit:
    """One write's root document: a placeholder every reader refuses until :meth:`commit`."""

    def __init__(self, root: zarr.Group) -> None:
        self._root = root
        self._held = _HeldRoot(metadata=root.metadata, store_path=root.store_path)
        self._key = root.store_path / ROOT_DOCUMENT
        self._consolidated: Buffer | None = None

    @staticmethod
    def applies_to(root: Any) -> bool:
        return isinstance(root, zarr.Group) and root.metadata.zarr_format == 3

    def begin(self) -> None:
        """Mark the store incomplete, then hold the root's metadata writes in memory."""
        sync(self._key.set(_buffer(json.dumps(PLACEHOLDER, indent=2).encode())))
        object.__setattr__(self._held, "_holding", True)
        object.__setattr__(self._root, "_async_group", self._held)  # zarr.Group is a frozen dataclass

    def _document(self) -> Buffer:
        return self._held.metadata.to_buffer_dict(default_buffer_prototype())[ROOT_DOCUMENT]

    def consolidate(self) -> None:
        """Consolidate the metadata now, as stock's last ``zarr.consolidate_metadata`` does;
        the result is stored by :meth:`commit`. Call it again if an array changed since."""
        view = _HeldRootView(self._key.store, self._key.path, self._document())
        zarr.consolidate_metadata(view, path=self._held.store_path.path or None)
        self._consolidated = view.document

    def commit(self) -> None:
        """The data is all stored: store the root document, in one write."""
        document = self._consolidated if self._consolidated is not None else self._document()
        self.release()
        sync(self._key.set(document))

    def release(self) -> None:
        """Stop holding; the store keeps whatever root document it has (after a failure, the placeholder)."""
        if getattr(self._held, "_holding", False):
            object.__setattr__(self._held, "_holding", False)
            if self._root._async_group is self._held:
                plain = AsyncGroup(metadata=self._held.metadata, store_path=self._held.store_path)
                object.__setattr__(self._root, "_async_group", plain)


@contextlib.contextmanager
def refusing_incomplete(store: Any) -> Iterator[None]:
    """Turn zarr's refusal of the placeholder into an :class:`IncompleteStoreError` naming the store."""
    try:
        yield
    except MetadataValidationError as exc:
        if INCOMPLETE_FIELD not in str(exc):
            raise
        from hdmf_zarr.utils import get_store_path

        where = store if isinstance(store, str) else get_store_path(store) if isinstance(store, Store) else str(store)
        raise IncompleteStoreError(f"'{where}'") from exc
