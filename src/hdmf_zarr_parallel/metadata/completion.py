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
from collections.abc import Iterator
from typing import Any

import zarr
from zarr.abc.buffer import Buffer
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.errors import MetadataValidationError

from .._zarr import HoldingGroup, OneKeyHeldStore, async_group, metadata_documents, swap_async_group, sync
from ..errors import IncompleteStoreError

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


class RootCommit:
    """One write's root document: a placeholder every reader refuses until :meth:`commit`.

    While the write runs, the root group's handle points at a :class:`~.._zarr.HoldingGroup`,
    whose own metadata writes stay in memory; groups zarr creates from it write through.
    """

    def __init__(self, root: zarr.Group) -> None:
        self._root = root
        self._held = HoldingGroup(metadata=root.metadata, store_path=root.store_path)
        self._key = root.store_path / ROOT_DOCUMENT
        self._consolidated: Buffer | None = None

    @staticmethod
    def applies_to(root: Any) -> bool:
        return isinstance(root, zarr.Group) and root.metadata.zarr_format == 3

    def begin(self) -> None:
        """Mark the store incomplete, then hold the root's metadata writes in memory."""
        placeholder = default_buffer_prototype().buffer.from_bytes(json.dumps(PLACEHOLDER, indent=2).encode())
        sync(self._key.set(placeholder))
        self._held.hold(True)
        swap_async_group(self._root, self._held)

    def _document(self) -> Buffer:
        return metadata_documents(self._held.metadata)[ROOT_DOCUMENT]

    def consolidate(self) -> None:
        """Consolidate the metadata now, as stock's last ``zarr.consolidate_metadata`` does, through a
        view of the store whose root document is the held one; the result is stored by :meth:`commit`.
        Call it again if an array changed since."""
        view = OneKeyHeldStore(self._key.store, self._key.path, self._document())
        zarr.consolidate_metadata(view, path=self._held.store_path.path or None)
        self._consolidated = view.document

    def commit(self) -> None:
        """The data is all stored: store the root document, in one write."""
        document = self._consolidated if self._consolidated is not None else self._document()
        self.release()
        sync(self._key.set(document))

    def release(self) -> None:
        """Stop holding; the store keeps whatever root document it has (after a failure, the placeholder)."""
        if getattr(self._held, "holding", False):
            self._held.hold(False)
            if async_group(self._root) is self._held:
                swap_async_group(
                    self._root, zarr.AsyncGroup(metadata=self._held.metadata, store_path=self._held.store_path)
                )


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
