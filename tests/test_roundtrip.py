"""Every write reads back exactly with stock zarr: iterator kinds × shapes × chunks × buffers × shards × codecs.

And with two independent Zarr v3 readers, tensorstore and zarrs (``readers.py``)."""

import numpy as np
import pytest
import zarr
from hdmf.data_utils import DataChunkIterator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Shuffle

from conftest import BlockIterator, NumpyIterator, gzip_clock_frozen, make_array, pipeline_write, realistic
from readers import assert_independent_readers_match

# (data shape, chunk shape, shard shape or None, iterator buffer shape)
CASES = [
    ((1000,), (100,), None, (250,)),  # 1-D, buffers span 2.5 chunks
    ((1001,), (64,), (256,), (100,)),  # sharded, edge shard, misaligned buffers
    ((300, 17), (64, 5), None, (100, 17)),  # 2-D, edge chunks on both axes
    ((300, 17), (32, 8), (64, 16), (50, 17)),  # 2-D sharded, misaligned
    ((40, 33, 7), (8, 10, 3), None, (12, 33, 7)),  # 3-D
    ((40, 33, 7), (4, 11, 7), (8, 22, 7), (5, 33, 7)),  # 3-D sharded
    ((64, 64), (64, 64), None, (64, 64)),  # one chunk
]


def read_back(store, path=""):
    return zarr.open_array(store, mode="r", path=path)[...]


@pytest.mark.parametrize("engine", ["serial", "threads", "processes"])
@pytest.mark.parametrize(("shape", "chunks", "shards", "buffer"), CASES)
def test_random_access_iterators(tmp_path, subtests, engine, shape, chunks, shards, buffer):
    data = realistic(shape)
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    array = make_array(store, shape, data.dtype, chunks, shards)
    iterator = NumpyIterator(data, buffer_shape=buffer, chunk_shape=buffer)
    pipeline_write([(array, iterator)], engine=engine, max_workers=2)
    np.testing.assert_array_equal(read_back(store), data)
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize("kind", ["DataChunkIterator", "AbstractDataChunkIterator"])
@pytest.mark.parametrize(("shape", "chunks", "shards", "buffer"), CASES)
def test_sequential_iterators(store, subtests, kind, shape, chunks, shards, buffer):
    data = realistic(shape, "float32")
    array = make_array(store, shape, data.dtype, chunks, shards)
    if kind == "DataChunkIterator":
        iterator = DataChunkIterator(data=data, buffer_size=buffer[0])
    else:
        iterator = BlockIterator(data, tuple(max(1, b - 3) for b in buffer))
    pipeline_write([(array, iterator)])
    np.testing.assert_array_equal(read_back(store), data)
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize(
    "codecs",
    [
        {},  # zarr's default: zstd
        {"compressors": GzipCodec(level=5)},
        {"compressors": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")},
        {"compressors": LZ4()},
        {"compressors": ZstdCodec(level=3, checksum=True)},
        {"compressors": [Shuffle(elementsize=2), ZstdCodec(level=1)]},
        {"compressors": None},
        {"serializer": BytesCodec(endian="big")},
    ],
    ids=["default", "gzip", "blosc", "lz4", "zstd-checksum", "shuffle", "uncompressed", "big-endian"],
)
@pytest.mark.parametrize("shards", [None, (120, 16)])
def test_codec_chains_are_written_as_zarr_writes_them(store, subtests, codecs, shards):
    data = realistic((250, 20))
    array = make_array(store, data.shape, data.dtype, (40, 8), shards, **codecs)
    with gzip_clock_frozen():
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(100, 20), chunk_shape=(50, 20)))])
        reference = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (40, 8), shards, **codecs)
        reference[...] = data
    np.testing.assert_array_equal(read_back(store), data)
    # the same keys and the same bytes as zarr itself writes for the same data
    ours_keys = sorted(k for k in _keys(store) if k.startswith("c/"))
    assert ours_keys == sorted(k for k in _keys(reference.store) if k.startswith("c/"))
    for key in ours_keys:
        assert _get(store, key) == _get(reference.store, key), key
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize(
    "chunk_key_encoding",
    [
        {"name": "default", "separator": "/"},
        {"name": "default", "separator": "."},
        {"name": "v2", "separator": "."},
        {"name": "v2", "separator": "/"},
    ],
    ids=["default-slash", "default-dot", "v2-dot", "v2-slash"],
)
@pytest.mark.parametrize(
    "codecs",
    [{}, {"compressors": [ZstdCodec(level=1), Crc32cCodec()]}],
    ids=["zstd", "zstd+crc32c"],
)
@pytest.mark.parametrize("shards", [None, (120, 16)])
def test_chunk_key_encodings_and_crc32c(store, subtests, chunk_key_encoding, codecs, shards):
    """Chunk keys with either separator, and a crc32c checksum after the compressor: the keys and
    bytes zarr writes, read back by stock zarr, tensorstore and zarrs."""
    data = realistic((250, 20), seed=5)
    kwargs = {"chunk_key_encoding": chunk_key_encoding, **codecs}
    array = make_array(store, data.shape, data.dtype, (40, 8), shards, **kwargs)
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(100, 20), chunk_shape=(50, 20)))])
    reference = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (40, 8), shards, **kwargs)
    reference[...] = data
    np.testing.assert_array_equal(read_back(store), data)
    ours_keys = sorted(k for k in _keys(store) if k != "zarr.json")
    assert ours_keys == sorted(k for k in _keys(reference.store) if k != "zarr.json")
    assert ours_keys[0] == array.metadata.encode_chunk_key((0, 0))
    for key in ours_keys:
        assert _get(store, key) == _get(reference.store, key), key
    assert_independent_readers_match(store, data, subtests)


def _get(store, key):
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    return sync(store.get(key, prototype=default_buffer_prototype())).to_bytes()


def _keys(store):
    from zarr.core.sync import sync

    async def collect():
        return [k async for k in store.list()]

    return sync(collect())


@pytest.mark.parametrize("write_empty_chunks", [False, True])
@pytest.mark.parametrize("shards", [None, (20, 10)])
def test_all_fill_value_chunks_follow_write_empty_chunks(store, subtests, write_empty_chunks, shards):
    data = np.zeros((40, 10), "int16")
    data[:10] = 7  # only the first chunk row holds data
    array = make_array(
        store, data.shape, data.dtype, (10, 10), shards, config={"write_empty_chunks": write_empty_chunks}
    )
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(20, 10), chunk_shape=(10, 10)))])
    np.testing.assert_array_equal(read_back(store), data)
    chunk_keys = [k for k in _keys(store) if k.startswith("c/")]
    expected = {(None, False): 1, (None, True): 4, ((20, 10), False): 1, ((20, 10), True): 2}
    assert len(chunk_keys) == expected[(shards, write_empty_chunks)]
    assert_independent_readers_match(store, data, subtests)


def test_nan_fill_value_chunks_are_skipped(store, subtests):
    data = np.full((30, 4), np.nan, "float32")
    data[:10] = 1.5
    array = make_array(store, data.shape, data.dtype, (10, 4), fill_value=np.nan)
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(30, 4), chunk_shape=(10, 4)))])
    np.testing.assert_array_equal(read_back(store), data)
    assert [k for k in _keys(store) if k.startswith("c/")] == ["c/0/0"]
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "int64", "float32", "float64", "bool"])
def test_dtypes(store, subtests, dtype):
    data = realistic((97, 5), "float64")
    data = (data > 0) if dtype == "bool" else data.astype(dtype)
    array = make_array(store, data.shape, data.dtype, (20, 3), (40, 3))
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(30, 5), chunk_shape=(30, 5)))])
    np.testing.assert_array_equal(read_back(store), data)
    assert_independent_readers_match(store, data, subtests)


def test_many_datasets_in_one_write(tmp_path, subtests):
    store = zarr.storage.LocalStore(tmp_path / "g.zarr")
    root = zarr.open_group(store, mode="w")
    sources = [realistic((200 + 13 * i, 6), seed=i) for i in range(5)]
    pairs = []
    for i, data in enumerate(sources):
        array = root.create_array(f"d{i}", shape=data.shape, dtype=data.dtype, chunks=(32, 6))
        iterator = (
            NumpyIterator(data, buffer_shape=(50, 6), chunk_shape=(50, 6))
            if i % 2
            else DataChunkIterator(data, buffer_size=21)
        )
        pairs.append((array, iterator))
    report = pipeline_write(pairs)
    assert report.datasets == 5
    assert report.bytes_written == sum(d.nbytes for d in sources)
    for i, data in enumerate(sources):
        np.testing.assert_array_equal(zarr.open_array(store, path=f"d{i}", mode="r")[...], data)
        assert_independent_readers_match(tmp_path / "g.zarr" / f"d{i}", data, subtests, name=f"d{i}")  # in a group


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(1, 3).flatmap(
        lambda r: st.tuples(
            st.tuples(*[st.integers(1, 30)] * r),
            st.tuples(*[st.integers(1, 8)] * r),
            st.tuples(*[st.integers(1, 3)] * r),
            st.tuples(*[st.integers(1, 20)] * r),
        )
    ),
    st.sampled_from(["random", "sequential"]),
    st.booleans(),
)
def test_property_any_geometry_reads_back_exactly(case, kind, sharded):
    shape, chunks, per_shard, buffer = case
    shards = tuple(c * p for c, p in zip(chunks, per_shard, strict=True)) if sharded else None
    data = realistic(shape, "int32", seed=sum(shape))
    store = zarr.storage.MemoryStore()
    array = make_array(store, shape, data.dtype, chunks, shards)
    if kind == "random":
        buffer = tuple(min(b, s) for b, s in zip(buffer, shape, strict=True))
        iterator = NumpyIterator(data, buffer_shape=buffer, chunk_shape=buffer)
    else:
        iterator = BlockIterator(data, buffer)
    pipeline_write([(array, iterator)], max_inflight_bytes=1 << 20)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
