"""Every private zarr-python and hdmf-zarr touch-point, each behind one small named function.

The rest of the package uses zarr's and hdmf-zarr's public API (``zarr.abc.*``, ``zarr.buffer``,
``zarr.codecs``, ``zarr.storage``, ``Array.async_array``, ``Array.config``, ``store_path``, ...),
and these functions for what only their internals offer. An upgrade of either checks this module and nothing else: each
entry below says what it relies on, and ``tests/test_zarr_touch_points.py`` fails loudly when
the installed minor version is not one of :data:`CHECKED`, or when a touched name is gone.

Checked against zarr-python 3.4.2 and hdmf-zarr 0.14.0:

zarr-python
  - ``Array.async_array.codec_pipeline``: the array's codecs *evolved* for its dtype (a
    ``blosc`` codec's typesize is the array's), iterated as a tuple: :func:`evolved_codecs`.
  - ``zarr.core.array_spec.ArraySpec``: the spec of one chunk that codecs encode with: :func:`unit_spec`.
  - ``zarr.core.chunk_utils.chunk_is_empty``: zarr's all-fill-value rule: :func:`chunk_is_empty`.
  - ``zarr.core.chunk_utils.ChunkTransform`` / ``zarr.core.codec_pipeline.AsyncChunkTransform``:
    one chunk through the codec chain, synchronously where every codec can: :func:`chunk_encoder`.
  - the numcodecs objects behind zarr's codecs, ``ZstdCodec._zstd_codec``, ``GzipCodec._gzip_codec``,
    ``BloscCodec._blosc_codec`` and ``zarr.codecs.numcodecs._codecs._NumcodecsBytesBytesCodec._codec``:
    :func:`numcodecs_encoder`.
  - ``ShardingCodec._subchunk_order_iter`` (with its public ``subchunk_write_order``) and
    ``ShardingCodec._get_chunk_spec``: :func:`shard_write_order`, :func:`shard_inner_spec`.
  - ``zarr.abc.store._store_supports_sync_io``: :func:`supports_sync_io`.
  - ``zarr.core.sync.sync``: a coroutine run on zarr's event loop: :func:`sync`.
  - ``Group._async_group`` (``Group`` is a frozen dataclass; replaced with ``object.__setattr__``):
    :func:`async_group`, :func:`swap_async_group`.
  - ``AsyncGroup._save_metadata``: the only way a group's own document is written (held back by
    :class:`HoldingGroup`).
  - ``WrapperStore._store`` and ``Store._get_many``: :class:`OneKeyHeldStore`.
  - ``ArrayV3Metadata.encode_chunk_key`` / ``to_buffer_dict``: :func:`chunk_key`, :func:`metadata_documents`.

hdmf-zarr
  - ``ZarrIO._ZarrIO__dci_queue``: the write queue ``write()``, ``export()`` and ``write_dataset()``
    assign (a property of that name intercepts it): :data:`DCI_QUEUE_ATTRIBUTE`, :func:`intercept_dci_queue`.
  - ``ZarrIODataChunkIteratorQueue.__write_chunk__``: stock's one-buffer write: :func:`write_stock_buffer`.
  - ``ZarrIO._open_file``, ``_open_file_consolidated`` and ``_open_for_namespaces``: overridden by
    the IO classes to name an incomplete store (:data:`HDMF_ZARR_OVERRIDES`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from typing import Any

import numpy as np
import zarr
from zarr import AsyncGroup
from zarr.abc.buffer import Buffer, BufferPrototype, NDBuffer
from zarr.abc.store import ByteRequest, Store
from zarr.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

#: the minor versions (``major.minor``) every touch-point here was checked against
CHECKED = {"zarr": ("3.4",), "hdmf-zarr": ("0.14",)}

Encode = Callable[[Any], Any]


# -- arrays, groups and their metadata -----------------------------------------------------------
def evolved_codecs(array: zarr.Array) -> tuple[Any, ...]:
    """The array's codecs as its chunks are encoded: evolved for its dtype and chunk shape."""
    return tuple(array.async_array.codec_pipeline)


def write_empty_chunks(array: zarr.Array) -> bool:
    """Whether the array stores chunks that hold only the fill value (else their keys are deleted)."""
    return bool(array.config.write_empty_chunks)


def chunk_key(metadata: Any, coords: tuple[int, ...]) -> str:
    """The store key of the chunk (or shard) at ``coords``, relative to the array."""
    return metadata.encode_chunk_key(coords)


def metadata_documents(metadata: Any) -> dict[str, Buffer]:
    """The documents (``zarr.json``) that ``metadata`` is stored as; raises as zarr's own write would."""
    return metadata.to_buffer_dict(default_buffer_prototype())


def async_group(group: zarr.Group) -> AsyncGroup:
    return group._async_group


def swap_async_group(group: zarr.Group, replacement: AsyncGroup) -> None:
    """Point a (frozen) ``zarr.Group`` at another ``AsyncGroup``: every handle to it sees the change."""
    object.__setattr__(group, "_async_group", replacement)


class HoldingGroup(AsyncGroup):
    """An ``AsyncGroup`` whose own metadata writes do nothing while :attr:`holding` is set.

    zarr writes a group's document only through ``_save_metadata`` (``update_attributes`` first
    updates the metadata in place); groups zarr creates from this one are of this class too,
    and write through, since only the instance whose ``holding`` is set holds.
    """

    async def _save_metadata(self, ensure_parents: bool = False) -> None:
        if not getattr(self, "holding", False):
            await super()._save_metadata(ensure_parents)

    def hold(self, holding: bool) -> None:
        object.__setattr__(self, "holding", holding)  # AsyncGroup is a frozen dataclass


# -- stores --------------------------------------------------------------------------------------
def supports_sync_io(store: Store) -> bool:
    """Whether the store serves synchronous ``get``/``set``/``delete`` right now (no event loop hop)."""
    from zarr.abc.store import _store_supports_sync_io

    return _store_supports_sync_io(store)


def sync[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a zarr coroutine to completion on zarr's own event loop, from any thread."""
    from zarr.core.sync import sync as zarr_sync

    return zarr_sync(coroutine)


def _buffer(data: bytes, prototype: BufferPrototype | None = None) -> Buffer:
    return (prototype or default_buffer_prototype()).buffer.from_bytes(data)


class OneKeyHeldStore(WrapperStore[Store]):
    """A view of ``store`` in which the value of one key is held in memory: reads of ``key`` see
    :attr:`document`, and writes of ``key`` replace it instead of reaching the store."""

    def __init__(self, store: Store, key: str, document: Buffer) -> None:
        super().__init__(store)
        self._key = key
        self.document = document

    @property
    def supports_consolidated_metadata(self) -> bool:
        return self._store.supports_consolidated_metadata

    def _held(self, prototype: BufferPrototype | None, byte_range: ByteRequest | None) -> Buffer:
        if byte_range is not None:
            raise NotImplementedError("a byte range of the held document")
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


# -- encoding ------------------------------------------------------------------------------------
def unit_spec(array: zarr.Array, shape: tuple[int, ...]) -> Any:
    """The ``ArraySpec`` zarr encodes one chunk (or shard) of ``shape`` of the array with."""
    from zarr.core.array_spec import ArraySpec

    metadata = array.metadata
    return ArraySpec(
        shape=shape,
        dtype=metadata.data_type,
        fill_value=metadata.fill_value,
        config=array.config,
        prototype=default_buffer_prototype(),
    )


def chunk_is_empty(chunk: NDBuffer, spec: Any) -> bool:
    """zarr's rule for a chunk it does not store: every element is the fill value."""
    from zarr.core.chunk_utils import chunk_is_empty as zarr_chunk_is_empty

    return zarr_chunk_is_empty(chunk, spec)


def chunk_encoder(codecs: tuple[Any, ...]) -> Callable[[NDBuffer, Any], Buffer | None]:
    """``encode(chunk, spec)`` through the whole codec chain, as zarr encodes one chunk: synchronously
    where every codec has a synchronous path, else by running the chain's coroutine."""
    from zarr.core.chunk_utils import ChunkTransform

    try:
        return ChunkTransform(codecs=codecs).encode_chunk
    except TypeError:  # a codec without a synchronous path
        from zarr.core.codec_pipeline import AsyncChunkTransform

        transform = AsyncChunkTransform(codecs=codecs)
        return lambda chunk, spec: sync(transform.encode_chunk(chunk, spec))


def numcodecs_encoder(codec: Any) -> Encode | None:
    """The numcodecs ``encode`` zarr calls for one bytes-to-bytes codec (it releases the GIL), or
    ``None`` for a codec that is not a numcodecs object underneath."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
    from zarr.codecs.numcodecs._codecs import _NumcodecsBytesBytesCodec

    if isinstance(codec, ZstdCodec):
        return _zstd_compress(codec._zstd_codec)
    if isinstance(codec, GzipCodec):
        return codec._gzip_codec.encode
    if isinstance(codec, BloscCodec):  # evolved by zarr: its typesize is the array's
        return codec._blosc_codec.encode
    if isinstance(codec, _NumcodecsBytesBytesCodec):
        return codec._codec.encode
    return None


def _zstd_compress(zstd: Any) -> Encode:
    """numcodecs' ``zstd.compress`` with the codec's settings: what ``Zstd.encode`` calls, without its
    Python-level wrapper (a contiguous buffer in, the same bytes out), for one call per (inner) chunk."""
    from numcodecs.zstd import compress

    if getattr(zstd, "checksum", False):
        return functools.partial(compress, level=zstd.level, checksum=True)
    return functools.partial(compress, level=zstd.level)


def shard_write_order(codec: Any, chunks_per_shard: tuple[int, ...]) -> list[int]:
    """The C-order positions of a shard's inner chunks in the order zarr's encoder lays them out."""
    coords: Iterator[tuple[int, ...]] = codec._subchunk_order_iter(chunks_per_shard, codec.subchunk_write_order)
    return [int(np.ravel_multi_index(c, chunks_per_shard)) for c in coords]


def shard_inner_spec(codec: Any, shard_spec: Any) -> Any:
    """The ``ArraySpec`` of one inner chunk of a shard of ``shard_spec``."""
    return codec._get_chunk_spec(shard_spec)


# -- hdmf-zarr -----------------------------------------------------------------------------------
DCI_QUEUE_ATTRIBUTE = "_ZarrIO__dci_queue"  # ZarrIO's self.__dci_queue, name-mangled
HDMF_ZARR_OVERRIDES = ("_open_file", "_open_file_consolidated", "_open_for_namespaces")


def intercept_dci_queue(cls: type, get: Callable[[Any], Any], assign: Callable[[Any, Any], None]) -> None:
    """Make every assignment of hdmf-zarr's write queue on instances of ``cls`` call ``assign(self,
    queue)``, and every read of it ``get(self)``."""
    setattr(cls, DCI_QUEUE_ATTRIBUTE, property(get, assign))


def write_stock_buffer(dataset: Any, iterator: Any) -> bool:
    """Write the iterator's next buffer the way stock hdmf-zarr does; ``False`` once it is exhausted."""
    from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue

    return ZarrIODataChunkIteratorQueue.__write_chunk__(dataset, iterator)
