"""Store encoded write units under their zarr keys: straight to files, or through the zarr store API.

:func:`make_sink` picks one of two sinks for an array:

* :class:`LocalFileSink` for a plain, writable ``zarr.storage.LocalStore`` (what a path string
  opens): worker threads write each chunk or shard file themselves, as zarr's ``LocalStore``
  does but without its per-chunk machinery (a ``Buffer`` wrapper, a ``Path`` per key, a
  ``mkdir`` per chunk, one hop into zarr's event loop for async callers): each parent
  directory is created once, the bytes go to a temporary name in the same directory
  (``os.write`` releases the GIL) and ``os.replace`` gives them their final name, so an
  interruption never leaves a torn chunk file under a chunk key. An all-fill unit deletes
  its key, as zarr does.
* :class:`ZarrStoreSink` for every other store (subclasses of ``LocalStore`` included: they
  may override its methods): zarr's own ``set``/``delete``, synchronously where the store
  supports it, else one hop into zarr's event loop per batch (``asyncio.gather`` of its sets).

Keys come from the array metadata's ``encode_chunk_key`` (``/`` or ``.`` separators, ``v2``
encoding). Both sinks take bytes-like objects (``bytes``, ``memoryview``, contiguous numpy
arrays), zarr ``Buffer``\\ s, or :class:`~..parts.Parts` (a shard's pieces: the file sink
writes them with ``os.writev``, zarr's API gets them joined), and raise
:class:`~.errors.ChunkWriteError` naming dataset, chunk and key, with the store's exception
as its cause.

Private zarr touch points: ``Array._async_array.store_path``,
``zarr.abc.store._store_supports_sync_io``, ``zarr.core.sync.sync``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import zarr
from zarr.abc.store import _store_supports_sync_io
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from ..cpu.native import NativeFiles
from ..errors import ChunkWriteError
from ..parts import Parts
from .budget import WriteCancelled
from .plan import Coords

__all__ = ["ChunkSink", "LocalFileSink", "ZarrStoreSink", "make_sink"]

#: what an encoder hands a sink: bytes-like, a zarr Buffer, or None (delete the key)
Blob = Any


def make_sink(array: zarr.Array, name: str | None = None, stop: threading.Event | None = None) -> ChunkSink:
    """The sink for ``array``: direct file writes for a plain local store (a batch at a time in one
    native call once this process runs the native loop), zarr's store API otherwise.

    Once ``stop`` is set, the sink raises ``WriteCancelled`` instead of storing: a worker that
    comes back late (from a read that took too long) stores nothing after its write has ended."""
    store = array._async_array.store_path.store
    if type(store) is LocalStore and not store.read_only:
        return LocalFileSink(array, name, stop, NativeFiles.make())
    return ZarrStoreSink(array, name, stop)


class ChunkSink:
    """Puts encoded units of one array into its store; ``None`` deletes the key as zarr does."""

    def __init__(self, array: zarr.Array, name: str | None = None, stop: threading.Event | None = None) -> None:
        self.name = name or array.path or array.name or "<root>"
        self._stop = stop
        self._store_path = array._async_array.store_path
        self._metadata = array.metadata

    def key(self, coords: Coords) -> str:
        """The chunk key relative to the array, as zarr names it (in error messages too)."""
        return self._metadata.encode_chunk_key(coords)

    def put(self, coords: Coords, blob: Blob) -> None:
        self.put_many(((coords, blob),))

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise WriteCancelled

    def put_many(self, items: Sequence[tuple[Coords, Blob]]) -> None:
        """Store (or delete, for ``None``) each unit; the first failure raises, naming its key."""
        raise NotImplementedError

    def _failed(self, coords: Coords, exc: BaseException) -> ChunkWriteError:
        return ChunkWriteError(self.name, coords, f"storing key '{self.key(coords)}'", repr(exc))


class LocalFileSink(ChunkSink):
    """Writes chunk files of a local store directly: temporary name, then ``os.replace``; a batch's
    files in one GIL-free call where the native loop runs (``native``: ``cpu/native.py``)."""

    def __init__(
        self,
        array: zarr.Array,
        name: str | None = None,
        stop: threading.Event | None = None,
        native: NativeFiles | None = None,
    ) -> None:
        super().__init__(array, name, stop)
        self._native = native
        path = self._store_path.path
        self._root = os.path.join(os.fspath(self._store_path.store.root), *path.split("/")) if path else None
        self._root = self._root or os.fspath(self._store_path.store.root)
        self._made: set[str] = set()  # parent directories known to exist (set.add is atomic)
        self._prefix = os.path.join(self._root, "")
        self._tag = f".{uuid.uuid4().hex[:12]}.{os.getpid()}"

    def path(self, coords: Coords) -> str:
        key = self.key(coords)  # "/"-separated, as zarr's LocalStore takes keys
        return self._prefix + (key if os.sep == "/" else key.replace("/", os.sep))

    def put_many(self, items: Sequence[tuple[Coords, Blob]]) -> None:
        self.check_stop()
        if self._native is not None and len(items) > 1:
            items = self._put_natively(items)
        for coords, blob in items:
            try:
                path = self.path(coords)
                if blob is None:
                    _remove(path)
                else:
                    self._write(path, blob)
            except Exception as exc:
                raise self._failed(coords, exc) from exc

    def _put_natively(self, items: Sequence[tuple[Coords, Blob]]) -> list[tuple[Coords, Blob]]:
        """Write the batch's files in one native call; returns what is left for the Python path: the
        keys to delete and, after a failure, that file and the rest (which then raise, naming the key)."""
        writes = [(coords, _buffer(blob)) for coords, blob in items if blob is not None and type(blob) is not Parts]
        left = [(coords, blob) for coords, blob in items if blob is None or type(blob) is Parts]  # writev: no copy
        paths, tmps = self.files([coords for coords, _ in writes])
        done = self._native.write([blob for _, blob in writes], tmps, paths)
        return left + writes[done:]

    def files(self, units: Sequence[Coords]) -> tuple[list[str], list[str]]:
        """The files of ``units`` and the temporary names to write them under first (this thread's),
        their parent directories made: for a caller that writes the files itself (``cpu/native.py``)."""
        paths = []
        for coords in units:
            try:
                path = self.path(coords)
                self._make_parent(path)
            except Exception as exc:
                raise self._failed(coords, exc) from exc
            paths.append(path)
        return paths, [self._temporary(path) for path in paths]

    def _make_parent(self, path: str) -> None:
        """Make the file's directory once per write: one ``mkdir`` where its parent exists (the usual
        case: zarr's keys add one level per row of units), ``os.makedirs`` where it does not."""
        parent = os.path.dirname(path)
        if parent not in self._made:
            try:
                os.mkdir(parent)
            except FileExistsError:
                pass  # a file there makes the write under it fail, naming the key
            except FileNotFoundError:
                os.makedirs(parent, exist_ok=True)
            self._made.add(parent)

    def _temporary(self, path: str) -> str:
        """The name a file is written under before it is renamed to ``path``: unique to this write and thread."""
        return f"{path}{self._tag}.{threading.get_ident()}.partial"

    def _write(self, path: str, blob: Blob) -> None:
        self._make_parent(path)
        data = _buffer(blob)
        tmp = self._temporary(path)
        try:
            fd = os.open(tmp, _CREATE, 0o666)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            _replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise


def _buffer(blob: Blob) -> Blob:
    """What the OS writes for a blob: its own buffer (zarr's ``Buffer`` gives its bytes-like view)."""
    return blob if type(blob) is bytes else blob.as_buffer_like() if isinstance(blob, Buffer) else blob


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def _write_all(fd: int, data: Blob) -> None:
    """Write every byte (``os.write`` may write fewer than asked; it releases the GIL)."""
    if type(data) is Parts:
        _write_parts(fd, data)
        return
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    written = os.write(fd, view)
    while written < len(view):
        view = view[written:]
        written = os.write(fd, view)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16


def _write_parts(fd: int, parts: Parts) -> None:
    """The pieces in order, in as few ``os.writev`` calls as the OS allows (each releases the GIL
    and copies nothing in this process); a short write is continued piece by piece."""
    pieces = parts.pieces
    if not hasattr(os, "writev"):  # Windows
        for piece in pieces:
            _write_all(fd, piece)
        return
    for first in range(0, len(pieces), _IOV_MAX):
        group = pieces[first : first + _IOV_MAX]
        expected = parts.nbytes if len(group) == len(pieces) else sum(memoryview(p).nbytes for p in group)
        written = os.writev(fd, group)
        for piece in group if written < expected else ():
            view = memoryview(piece).cast("B")
            if written >= view.nbytes:
                written -= view.nbytes
                continue
            _write_all(fd, view[written:])
            written = 0


def _replace(tmp: str, path: str) -> None:
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # zarr's LocalStore.delete removes a directory under the key too
        import shutil

        shutil.rmtree(path)


class ZarrStoreSink(ChunkSink):
    """Any zarr store through its own API: sync calls where it has them, else one event-loop hop per batch."""

    def __init__(self, array: zarr.Array, name: str | None = None, stop: threading.Event | None = None) -> None:
        super().__init__(array, name, stop)
        self._sync_io = _store_supports_sync_io(self._store_path.store)
        self._buffer = default_buffer_prototype().buffer

    def _as_buffer(self, blob: Blob) -> Buffer:
        return blob if isinstance(blob, Buffer) else self._buffer.from_bytes(blob)

    def put_many(self, items: Sequence[tuple[Coords, Blob]]) -> None:
        self.check_stop()
        if self._sync_io:
            for coords, blob in items:
                try:
                    target = self._store_path / self.key(coords)
                    if blob is None:
                        target.delete_sync()
                    else:
                        target.set_sync(self._as_buffer(blob))
                except Exception as exc:
                    raise self._failed(coords, exc) from exc
            return
        if not items:
            return
        results = sync(self._gather(items))
        for (coords, _), result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                raise self._failed(coords, result) from result

    async def _gather(self, items: Sequence[tuple[Coords, Blob]]) -> list:
        async def one(coords: Coords, blob: Blob) -> None:
            target = self._store_path / self.key(coords)
            if blob is None:
                await target.delete()
            else:
                await target.set(self._as_buffer(blob))

        return await asyncio.gather(*(one(c, b) for c, b in items), return_exceptions=True)
