"""The private zarr / hdmf-zarr touch-points of ``_zarr.py``: checked versions, and each one still there.

An upgrade of zarr-python or hdmf-zarr outside the checked minor versions fails here first, by
name, instead of somewhere deep in a write; so does a private name that upstream removed.
"""

from importlib.metadata import version

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec, ZstdCodec

from hdmf_zarr_parallel import _zarr


@pytest.mark.parametrize("distribution", sorted(_zarr.CHECKED))
def test_the_installed_minor_version_is_one_the_touch_points_were_checked_against(distribution):
    installed = version(distribution)
    minor = ".".join(installed.split(".")[:2])
    assert minor in _zarr.CHECKED[distribution], (
        f"{distribution} {installed} is installed, but hdmf_zarr_parallel/_zarr.py was checked against "
        f"{distribution} {', '.join(_zarr.CHECKED[distribution])}.x only: check every touch-point listed in "
        "its docstring against this version, then add it to CHECKED (and to the pin in pyproject.toml)"
    )


def _array(**kwargs):
    return zarr.create_array(zarr.storage.MemoryStore(), shape=(8, 6), chunks=(4, 3), dtype="int16", **kwargs)


def test_array_internals_answer_as_expected():
    array = _array(compressors=[ZstdCodec()], config={"write_empty_chunks": False})
    codecs = _zarr.evolved_codecs(array)
    assert isinstance(codecs[0], BytesCodec) and isinstance(codecs[-1], ZstdCodec)
    assert _zarr.write_empty_chunks(array) is False
    assert _zarr.chunk_key(array.metadata, (1, 0)) == "c/1/0"
    assert set(_zarr.metadata_documents(array.metadata)) == {"zarr.json"}
    assert _zarr.supports_sync_io(array.store_path.store) in (True, False)


def test_one_chunk_encodes_as_zarr_stores_it():
    array = _array(compressors=[GzipCodec()])
    spec = _zarr.unit_spec(array, (4, 3))
    encode = _zarr.chunk_encoder(_zarr.evolved_codecs(array))
    prototype = zarr.buffer.default_buffer_prototype()
    data = np.arange(12, dtype="int16").reshape(4, 3)
    chunk = prototype.nd_buffer.from_numpy_array(data)
    assert not _zarr.chunk_is_empty(chunk, spec)
    assert _zarr.chunk_is_empty(prototype.nd_buffer.from_numpy_array(np.zeros_like(data)), spec)
    array[:4, :3] = data
    stored = _zarr.sync(array.store_path.store.get("c/0/0", prototype=prototype))
    assert encode(chunk, spec).to_bytes() == stored.to_bytes()


@pytest.mark.parametrize("codec", [ZstdCodec(), GzipCodec(), BloscCodec(), zarr.codecs.numcodecs.LZ4()])
def test_every_compressor_has_its_numcodecs_object(codec):
    array = _array(compressors=[codec])
    encode = _zarr.numcodecs_encoder(_zarr.evolved_codecs(array)[-1])
    assert encode is not None and len(bytes(encode(np.zeros(64, "uint8")))) > 0


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_the_direct_zstd_call_gives_the_bytes_of_zarrs_own_codec(level, checksum):
    array = _array(compressors=[ZstdCodec(level=level, checksum=checksum)])
    codec = _zarr.evolved_codecs(array)[-1]
    data = np.cumsum(np.random.default_rng(level).normal(0, 20, 40_000)).astype("<i2").view(np.uint8)
    assert bytes(_zarr.numcodecs_encoder(codec)(data)) == bytes(codec._zstd_codec.encode(data))


def test_shard_internals_answer_as_expected():
    array = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(8, 6), shards=(8, 6), chunks=(4, 3), dtype="int16", compressors=None
    )
    sharding = next(c for c in _zarr.evolved_codecs(array) if isinstance(c, ShardingCodec))
    assert sorted(_zarr.shard_write_order(sharding, (2, 2))) == [0, 1, 2, 3]
    assert tuple(_zarr.shard_inner_spec(sharding, _zarr.unit_spec(array, (8, 6))).shape) == (4, 3)


def test_group_internals_answer_as_expected():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    held = _zarr.HoldingGroup(metadata=group.metadata, store_path=group.store_path)
    held.hold(True)
    _zarr.swap_async_group(group, held)
    assert _zarr.async_group(group) is held
    group.update_attributes({"a": 1})  # held: the store keeps the old document
    stored = _zarr.sync(group.store_path.store.get("zarr.json", prototype=zarr.buffer.default_buffer_prototype()))
    assert b'"a"' not in stored.to_bytes()
    view = _zarr.OneKeyHeldStore(
        group.store_path.store, "zarr.json", _zarr.metadata_documents(held.metadata)["zarr.json"]
    )
    zarr.consolidate_metadata(view)  # reads the held document, and writes the consolidated one into the view
    assert b'"a"' in view.document.to_bytes() and b"consolidated_metadata" in view.document.to_bytes()


def test_hdmf_zarr_internals_are_still_there():
    from hdmf_zarr import ZarrIO
    from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue

    assert callable(ZarrIODataChunkIteratorQueue.__write_chunk__)
    missing = [name for name in _zarr.HDMF_ZARR_OVERRIDES if not callable(getattr(ZarrIO, name, None))]
    assert not missing, f"hdmf-zarr no longer has ZarrIO.{', '.join(missing)}: the IO classes override them"
    # the queue attribute itself: tests/test_io.py::test_upstream_still_assigns_the_private_queue_attribute
