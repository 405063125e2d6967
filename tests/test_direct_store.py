"""The direct file writes of a plain LocalStore (``sink.LocalFileSink``) leave exactly what zarr leaves:
the same keys (all-fill chunks absent or present as ``write_empty_chunks`` says, keys that held data
deleted), the same bytes, under every chunk-key encoding; no temporary files; no torn chunk files."""

import errno
import os
from unittest import mock

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Shuffle

from conftest import NumpyIterator, gzip_clock_frozen, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.parts import Parts
from hdmf_zarr_parallel.write import sink, target
from hdmf_zarr_parallel.write.dataset import DatasetWrite

CHAINS = {
    "default": {},
    "gzip": {"compressors": GzipCodec(level=5)},
    "blosc": {"compressors": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")},
    "lz4": {"compressors": LZ4()},
    "shuffle": {"compressors": [Shuffle(elementsize=2), ZstdCodec(level=1)]},
    "uncompressed": {"compressors": None},
    "big-endian": {"serializer": BytesCodec(endian="big")},
    "crc32c": {"compressors": [ZstdCodec(level=1), Crc32cCodec()]},  # zarr's ChunkTransform encodes it
}
KEY_ENCODINGS = {
    "slash": {"name": "default", "separator": "/"},
    "dot": {"name": "default", "separator": "."},
    "v2": {"name": "v2", "separator": "."},
}


def files(root):
    """Every file under ``root`` (relative path -> bytes), metadata documents excepted."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name != "zarr.json":
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def with_fill_chunks(shape, seed=0):
    """Data whose first and middle chunk rows hold only the fill value."""
    data = realistic(shape, seed=seed)
    data[:40] = 0
    data[120:160] = 0
    return data


def write_both(tmp_path, data, chunks, shards, chain, keys, empty, before=None):
    """Write ``data`` with the pipeline and with zarr (each over ``before`` first, when given)."""
    kwargs = {**CHAINS[chain], "chunk_key_encoding": KEY_ENCODINGS[keys], "config": {"write_empty_chunks": empty}}
    roots = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    arrays = [make_array(zarr.storage.LocalStore(r), data.shape, data.dtype, chunks, shards, **kwargs) for r in roots]
    ours, reference = arrays
    assert isinstance(DatasetWrite(ours, NumpyIterator(data)).target.sink, sink.LocalFileSink)
    with gzip_clock_frozen():
        if before is not None:
            ours[...] = before
            reference[...] = before
        pipeline_write([(ours, NumpyIterator(data, buffer_shape=(80, data.shape[1])))])
        reference[...] = data
    return roots


@pytest.mark.parametrize("keys", sorted(KEY_ENCODINGS))
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("shards", [None, (80, 16)])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_the_same_files_as_zarr(tmp_path, chain, shards, empty, keys):
    if chain == "crc32c" and shards is not None:
        pytest.skip("covered unsharded")
    if chain == "big-endian" and shards is not None and empty:
        pytest.xfail(
            "zarr's ChunkTransform encodes padded edge shards whole; zarr's own write leaves "
            "inner chunks wholly in the padding out (the fast shard path does too)"
        )
    data = with_fill_chunks((250, 20))
    before = realistic(data.shape, seed=5)  # every key holds data first: all-fill chunks must delete theirs
    ours, reference = write_both(tmp_path, data, (40, 8), shards, chain, keys, empty, before=before)
    assert files(ours) == files(reference)
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(ours, read_only=True))[...], data)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.tuples(st.integers(1, 60), st.integers(1, 12)),
    st.tuples(st.integers(1, 9), st.integers(1, 5)),
    st.sampled_from([None, (2, 1), (3, 2)]),
    st.sampled_from(["default", "gzip", "shuffle", "big-endian", "uncompressed"]),
    st.sampled_from(sorted(KEY_ENCODINGS)),
    st.booleans(),
    st.floats(0, 1),
    st.sampled_from([None, 1, 2, 5]),
)
def test_property_any_geometry_gives_zarrs_files(
    tmp_path_factory, shape, chunks, per_shard, chain, keys, empty, blank, block_units
):
    """``block_units``: how many units a block of a tile holds at most (``None``: the default
    ``BLOCK_BYTES``, a whole tile here), so tiles are cut into several blocks, edge blocks too."""
    assume(not (chain == "big-endian" and per_shard and empty))  # see test_the_same_files_as_zarr
    tmp_path = tmp_path_factory.mktemp("p")
    shards = None if per_shard is None else tuple(c * p for c, p in zip(chunks, per_shard, strict=True))
    data = realistic(shape, seed=sum(shape))
    rows = np.random.default_rng(sum(chunks)).random(shape[0]) < blank
    data[rows] = 0  # whole rows at the fill value: some chunks hold only it
    kwargs = {**CHAINS[chain], "chunk_key_encoding": KEY_ENCODINGS[keys], "config": {"write_empty_chunks": empty}}
    roots = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    ours, reference = (
        make_array(zarr.storage.LocalStore(r), shape, data.dtype, chunks, shards, **kwargs) for r in roots
    )
    buffer = (min(shape[0], 7), shape[1])
    unit_nbytes = int(np.prod(shards or chunks)) * data.dtype.itemsize
    block_bytes = target.BLOCK_BYTES if block_units is None else block_units * unit_nbytes
    with gzip_clock_frozen(), mock.patch.object(target, "BLOCK_BYTES", block_bytes):
        pipeline_write([(ours, NumpyIterator(data, buffer_shape=buffer))], max_inflight_bytes=1 << 20)
        reference[...] = data
    assert files(roots[0]) == files(roots[1])


def test_no_temporary_files_are_left(tmp_path):
    data = with_fill_chunks((400, 16))
    ours, _ = write_both(tmp_path, data, (40, 8), None, "default", "slash", False)
    assert not [p for p in ours.rglob("*") if p.name.endswith(".partial")]


def _arm(monkeypatch, name, fail_on, fail):
    """Make ``sink.<name>`` call ``fail`` instead on its ``fail_on``-th call."""
    real = getattr(sink, name)
    calls = [0]

    def patched(*args):
        calls[0] += 1
        if calls[0] == fail_on:
            return fail(real, *args)
        return real(*args)

    monkeypatch.setattr(sink, name, patched)


def test_a_crash_between_temporary_write_and_rename_leaves_no_torn_chunk(tmp_path, monkeypatch):
    root = tmp_path / "a.zarr"
    old, new = realistic((400, 8), seed=1), realistic((400, 8), seed=2)
    array = make_array(zarr.storage.LocalStore(root), old.shape, old.dtype, (40, 8))
    pipeline_write([(array, NumpyIterator(old, buffer_shape=(40, 8)))], engine="serial")
    before = files(root)

    def crash(real, tmp, path):
        raise RuntimeError("power cut")

    _arm(monkeypatch, "_replace", 4, crash)
    with pytest.raises(ChunkWriteError, match=r"chunk \(3, 0\) while storing key 'c/3/0'.*power cut"):
        pipeline_write([(array, NumpyIterator(new, buffer_shape=(40, 8)))], engine="serial")
    after = files(root)
    assert set(after) == set(before)
    assert after["c/3/0"] == before["c/3/0"]  # the old chunk, whole: never a torn one
    assert not [p for p in root.rglob("*") if p.name.endswith(".partial")]


def test_a_full_disk_names_the_key_and_keeps_errno(tmp_path, monkeypatch):
    root = tmp_path / "a.zarr"
    data = realistic((400, 8))
    array = make_array(zarr.storage.LocalStore(root), data.shape, data.dtype, (40, 8))

    def disk_full(real, fd, blob):
        real(fd, memoryview(blob).cast("B")[: len(memoryview(blob).cast("B")) // 2])  # a torn temporary file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _arm(monkeypatch, "_write_all", 6, disk_full)
    with pytest.raises(ChunkWriteError, match=r"chunk \(5, 0\) while storing key 'c/5/0'.*No space left") as err:
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(40, 8)))], engine="serial")
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert not (root / "c" / "5" / "0").exists()
    assert not [p for p in root.rglob("*") if p.name.endswith(".partial")]


def test_other_stores_keep_zarrs_api(tmp_path):
    make_array(zarr.storage.LocalStore(tmp_path / "r.zarr"), (10,), "int16", (5,))
    memory = make_array(zarr.storage.MemoryStore(), (10,), "int16", (5,))
    assert isinstance(sink.make_sink(memory), sink.ZarrStoreSink)
    read_only = zarr.open_array(zarr.storage.LocalStore(tmp_path / "r.zarr", read_only=True))
    assert isinstance(sink.make_sink(read_only), sink.ZarrStoreSink)


def _written(tmp_path, monkeypatch, call: str, replacement, write, data) -> bytes:
    """What ``write(fd, data)`` puts in a new file while the sink's ``os.<call>`` is ``replacement``."""
    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    monkeypatch.setattr(sink.os, call, replacement)
    try:
        write(fd, data)
    finally:
        monkeypatch.undo()
        os.close(fd)
    return path.read_bytes()


@pytest.mark.parametrize("data", [b"x" * 100, np.arange(50, dtype="<i2"), memoryview(b"abc" * 33)])
def test_every_byte_is_written_when_the_os_writes_fewer(tmp_path, monkeypatch, data):
    """``os.write`` may write fewer bytes than asked (signals, pipes, quotas): the rest follows."""
    real_write = os.write
    calls = []

    def short_write(fd, buffer):
        calls.append(len(buffer))
        return real_write(fd, bytes(memoryview(buffer)[:7]))

    expected = bytes(memoryview(data).cast("B"))
    assert _written(tmp_path, monkeypatch, "write", short_write, sink._write_all, data) == expected
    assert len(calls) == -(-len(expected) // 7)


def _pieces(count: int, seed: int = 0) -> list:
    """Bytes, memoryviews and numpy arrays of different sizes: what a shard's parts may be."""
    rng = np.random.default_rng(seed)
    kinds = (bytes, memoryview, lambda b: np.frombuffer(b, np.uint8))
    return [kinds[i % 3](rng.bytes(int(rng.integers(0, 40)))) for i in range(count)]


@pytest.mark.parametrize("short", [False, True])
@pytest.mark.parametrize("count", [3, 2500])  # more pieces than one writev takes (IOV_MAX, 1024 on Linux)
def test_parts_are_written_whole_in_order(tmp_path, monkeypatch, short, count):
    """A shard's pieces go to the file with os.writev, as few calls as IOV_MAX allows; when the OS writes
    fewer bytes than asked, the rest follows; the file holds the pieces joined, in order."""
    pieces = _pieces(count)
    parts = Parts(pieces, sum(memoryview(p).nbytes for p in pieces))
    real_writev = os.writev
    calls = []

    def writev(fd, group):
        calls.append(len(group))
        if short:  # only the first 5 bytes of the group
            return real_writev(fd, [bytes(memoryview(b"".join(group))[:5])])
        return real_writev(fd, group)

    assert _written(tmp_path, monkeypatch, "writev", writev, sink._write_parts, parts) == b"".join(pieces)
    assert bytes(parts) == b"".join(pieces)
    assert calls == [min(sink._IOV_MAX, count - i) for i in range(0, count, sink._IOV_MAX)]


def test_parts_read_as_one_buffer_where_a_store_needs_one():
    """zarr's store API (here a MemoryStore) gets the pieces joined; the joined buffer lives as long as
    the Parts, so a numpy view of it stays valid."""
    array = make_array(zarr.storage.MemoryStore(), (8,), "uint8", (8,), compressors=None)
    pieces = [b"\x01\x02", memoryview(b"\x03\x04\x05"), np.arange(6, 9, dtype=np.uint8)]
    parts = Parts(pieces, 8)
    sink.make_sink(array).put((0,), parts)
    np.testing.assert_array_equal(array[...], np.arange(1, 9))
    view = np.frombuffer(parts, np.uint8)
    del pieces
    np.testing.assert_array_equal(view, np.arange(1, 9))
    assert len(parts) == 8 and memoryview(parts).tobytes() == bytes(range(1, 9))
