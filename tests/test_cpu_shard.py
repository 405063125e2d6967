"""Shards encoded by ``cpu.shard`` are byte-for-byte the shards zarr itself encodes."""

import numpy as np
import pytest
import zarr
import zarr.codecs.numcodecs as zn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, TransposeCodec, ZstdCodec
from zarr.storage import MemoryStore

from conftest import NumpyIterator, gzip_clock_frozen, pipeline_write, walk
from hdmf_zarr_parallel.cpu.unit import ZarrUnitEncoder, encoded_bytes
from readers import assert_independent_readers_match

CHAINS = {
    "zstd": lambda: [ZstdCodec(level=3)],
    "zstd-default": lambda: [ZstdCodec()],
    "gzip": lambda: [GzipCodec(level=4)],
    "lz4": lambda: [zn.LZ4()],
    "zlib": lambda: [zn.Zlib(level=1)],
    "shuffle+gzip": lambda: [zn.Shuffle(elementsize=2), GzipCodec(level=4)],
    "blosc": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
    "blosc-lz4-bitshuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    "none": lambda: [],
}
DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64", "bool"]


def sharded(
    shape, inner, shard, dtype, chain, fill_value=0, index_crc=True, index_location="end", empty=False, store=None
):
    index_codecs = [BytesCodec(), Crc32cCodec()] if index_crc else [BytesCodec()]
    return zarr.create_array(
        MemoryStore() if store is None else store,
        shape=shape,
        chunks=shard,
        dtype=dtype,
        fill_value=fill_value,
        compressors=None,
        serializer=ShardingCodec(
            chunk_shape=inner,
            codecs=[BytesCodec(), *CHAINS[chain]()],
            index_codecs=index_codecs,
            index_location=index_location,
        ),
        config={"write_empty_chunks": empty},
    )


def both_ways(array, unit):
    """(ours, zarr's) encoded bytes of one unit (the first shard); ``None`` where it is not stored.

    zarr's are what ``array[...] = unit`` stores: for an edge shard (``unit`` smaller than the
    shard), zarr leaves inner chunks wholly in the padding out, even with ``write_empty_chunks``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    encoder = ZarrUnitEncoder(array)
    assert encoder._shards is not None, "this chain takes the fast path"
    ours = encoder.encode(unit)
    array[tuple(slice(0, n) for n in unit.shape)] = unit
    key = array.metadata.encode_chunk_key((0,) * unit.ndim)
    theirs = sync(array.store.get(key, prototype=default_buffer_prototype()))
    return encoded_bytes(ours), encoded_bytes(theirs)


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 3))
    inner = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    per_shard = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    shard = tuple(i * k for i, k in zip(inner, per_shard, strict=True))
    edge = tuple(draw(st.integers(1, s)) for s in shard)  # the data of an edge shard: the rest is padding
    dtype = draw(st.sampled_from(DTYPES))
    return {
        "inner": inner,
        "shard": shard,
        "edge": edge,
        "dtype": dtype,
        "chain": draw(st.sampled_from(sorted(CHAINS))),
        "fill_value": draw(st.sampled_from([0, 1])),
        "index_crc": draw(st.booleans()),
        "index_location": draw(st.sampled_from(["start", "end"])),
        "empty": draw(st.booleans()),
        "blank": draw(st.floats(0, 1)),  # share of the data set to the fill value
        "seed": draw(st.integers(0, 100)),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_same_bytes_as_zarr(case):
    if case["chain"] == "shuffle+gzip" and np.dtype(case["dtype"]).itemsize != 2:
        case["chain"] = "gzip"
    array = sharded(
        case["shard"],
        case["inner"],
        case["shard"],
        case["dtype"],
        case["chain"],
        fill_value=case["fill_value"],
        index_crc=case["index_crc"],
        index_location=case["index_location"],
        empty=case["empty"],
    )
    data = walk(case["edge"], case["dtype"], seed=case["seed"])
    rng = np.random.default_rng(case["seed"])
    data[rng.random(case["edge"]) < case["blank"]] = case["fill_value"]  # whole inner chunks may be fill only
    with gzip_clock_frozen():
        ours, theirs = both_ways(array, data)
    assert ours == theirs


def test_a_nan_fill_value_elides_nan_inner_chunks_as_zarr_does():
    array = sharded((8, 4), (2, 4), (8, 4), "float32", "zstd", fill_value=float("nan"))
    data = walk((8, 4), "float32")
    data[2:6] = np.nan  # two inner chunks hold only the fill value
    ours, theirs = both_ways(array, data)
    assert ours == theirs


@pytest.mark.parametrize("order", ["morton", "lexicographic", "colexicographic", "unordered"])
def test_inner_chunks_follow_the_write_order_of_zarrs_encoder(order):
    """The shard layout lays inner chunks out in the order the sharding codec writes them."""
    array = zarr.create_array(
        MemoryStore(),
        shape=(12, 6),
        chunks=(12, 6),
        dtype="int16",
        compressors=None,
        serializer=ShardingCodec(chunk_shape=(3, 2), codecs=[BytesCodec(), ZstdCodec()], subchunk_write_order=order),
    )
    ours, theirs = both_ways(array, walk((12, 6), "int16"))
    assert ours == theirs


@pytest.mark.parametrize(
    "make",
    [
        lambda: zarr.create_array(MemoryStore(), shape=(8,), chunks=(4,), dtype="int16"),  # not sharded
        lambda: zarr.create_array(
            MemoryStore(), shape=(8,), chunks=(2,), shards=(8,), dtype="int16", serializer=BytesCodec(endian="big")
        ),
        lambda: zarr.create_array(
            MemoryStore(), shape=(8,), chunks=(2,), shards=(8,), dtype="int16", compressors=[Crc32cCodec()]
        ),
        lambda: zarr.create_array(
            MemoryStore(),
            shape=(4, 4),
            chunks=(2, 2),
            shards=(4, 4),
            dtype="int16",
            filters=[TransposeCodec(order=(1, 0))],
        ),
    ],
    ids=["unsharded", "big-endian", "crc32c", "transpose"],
)
def test_other_chains_are_left_to_zarr(make):
    assert ZarrUnitEncoder(make())._shards is None


def test_a_sharded_write_reads_back_exactly(tmp_path, subtests):
    from conftest import make_array

    data = walk((1000, 12), "int16", seed=9)
    data[100:300] = 0  # fill-only inner chunks, elided
    array = make_array(zarr.storage.LocalStore(tmp_path / "s.zarr"), data.shape, data.dtype, (50, 4), shards=(200, 12))
    assert ZarrUnitEncoder(array)._shards is not None
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(300, 12)))])
    np.testing.assert_array_equal(
        zarr.open_array(zarr.storage.LocalStore(tmp_path / "s.zarr", read_only=True))[...], data
    )
    assert_independent_readers_match(tmp_path / "s.zarr", data, subtests)


# every index layout; each chain with write_empty_chunks both off and on (pairwise, to stay quick)
SHARD_LAYOUTS = [("start", True, False), ("start", False, True), ("end", True, True), ("end", False, False)]


@pytest.mark.parametrize(
    ("index_location", "index_crc", "empty"),
    SHARD_LAYOUTS,
    ids=[f"{loc}-{'crc32c' if crc else 'no-crc'}-{'write' if e else 'skip'}-empty" for loc, crc, e in SHARD_LAYOUTS],
)
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_shard_layout_reads_back_with_independent_readers(
    tmp_path, subtests, chain, index_location, index_crc, empty
):
    """Every chain and index layout of the fast shard path, written by the pipeline, with edge
    shards and fill-only inner chunks: stock zarr, tensorstore and zarrs read it bit-exactly."""
    data = walk((45, 14), "int16", seed=3)
    data[12:24] = 1  # two rows of inner chunks hold only the fill value
    array = sharded(
        data.shape,
        (6, 4),
        (18, 8),
        "int16",
        chain,
        fill_value=1,
        index_crc=index_crc,
        index_location=index_location,
        empty=empty,
        store=zarr.storage.LocalStore(tmp_path / "s.zarr"),
    )
    assert ZarrUnitEncoder(array)._shards is not None, "this chain takes the fast path"
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(15, 14)))])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr"), mode="r")[...], data)
    assert_independent_readers_match(tmp_path / "s.zarr", data, subtests)
