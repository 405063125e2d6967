"""The GIL-free block writer (``cpu/native.py``, numba): zarr's files, byte for byte, for chunks
and shards, and failures that fall back to the Python path, which names the key."""

import functools
import os
import pickle

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec

from conftest import NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.cpu import native
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from readers import assert_independent_readers_match
from test_direct_store import KEY_ENCODINGS, files

pytest.importorskip("numba")


@pytest.fixture(autouse=True, scope="module")
def compiled_here_only():
    """The loop compiled for this module alone: once compiled, a process uses it for every dataset it
    suits, and the other modules' tests (which patch the Python path's file calls) must not see it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "_compiled", functools.cache(native._compiled.__wrapped__))
        yield


@pytest.fixture
def blocks_written(monkeypatch):
    """Every dataset takes the native path; counts the blocks it wrote that way."""
    monkeypatch.setattr(native, "NATIVE_MIN_BYTES", 0)
    real = native.NativeUnitFiles.write
    counts = {"blocks": 0, "chunks": 0}

    def counting(self, matrix, skip, todo, tmps, paths):
        done = real(self, matrix, skip, todo, tmps, paths)
        counts["blocks"] += 1
        counts["chunks"] += done
        return done

    monkeypatch.setattr(native.NativeUnitFiles, "write", counting)
    return counts


def write_both(tmp_path, data, chunks, buffer, before=None, **kwargs):
    roots = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    ours, reference = (make_array(zarr.storage.LocalStore(r), data.shape, data.dtype, chunks, **kwargs) for r in roots)
    if before is not None:
        ours[...] = before
        reference[...] = before
    pipeline_write([(ours, NumpyIterator(data, buffer_shape=buffer))])
    reference[...] = data
    return roots


@pytest.mark.parametrize("keys", sorted(KEY_ENCODINGS))
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("codec", [ZstdCodec(level=0), ZstdCodec(level=7, checksum=True)], ids=["zstd", "zstd-7-crc"])
def test_the_same_files_as_zarr(tmp_path, subtests, blocks_written, keys, empty, codec):
    data = realistic((3000, 45))  # edge chunks on both axes
    data[400:800] = 0  # all-fill chunks: their keys (which held data before) are deleted
    kwargs = {"compressors": codec, "chunk_key_encoding": KEY_ENCODINGS[keys], "config": {"write_empty_chunks": empty}}
    ours, reference = write_both(tmp_path, data, (200, 16), (1000, 45), realistic(data.shape, seed=3), **kwargs)
    assert files(ours) == files(reference)
    assert not [name for name in files(ours) if name.endswith(".partial")]
    whole = (3000 // 200) * (45 // 16)  # every chunk not cut by the edge
    assert blocks_written["chunks"] == whole - (0 if empty else 2 * (45 // 16))
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(ours, read_only=True))[...], data)
    assert_independent_readers_match(ours, data, subtests)  # tensorstore and zarrs


class ReadOnlyIterator(NumpyIterator):
    """Hands out read-only buffers, as a read-only memory map does."""

    def _get_data(self, selection):
        data = np.ascontiguousarray(super()._get_data(selection))
        data.setflags(write=False)
        return data


def test_read_only_buffers_are_written_natively(tmp_path, blocks_written):
    data = realistic((800, 16))
    root = tmp_path / "a.zarr"
    array = make_array(zarr.storage.LocalStore(root), data.shape, data.dtype, (100, 16))
    pipeline_write([(array, ReadOnlyIterator(data, buffer_shape=(800, 16)))])
    assert blocks_written["chunks"] == 8
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(root, read_only=True))[...], data)


def test_a_sink_never_starts_the_loop(tmp_path, monkeypatch):
    """A huge array written in a few places must not pay for numba's start-up: only a process that
    runs the loop already (a large dataset's encoder started it, or prepare()) writes batches natively."""
    from hdmf_zarr_parallel.write.sink import make_sink

    monkeypatch.setattr(native, "_compiled", functools.cache(native._compiled.__wrapped__))  # a new process
    array = zarr.create_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), shape=(1 << 40,), dtype="uint8")
    assert make_sink(array)._native is None and not native.running()
    assert native.prepare() and native.running()
    assert make_sink(array)._native is not None


def sharded_zstd(index_location, crc, order="morton"):
    """zstd inner chunks in shards, with the index where ``index_location`` says (and its crc32c)."""
    return ShardingCodec(
        chunk_shape=(50, 16),
        codecs=[BytesCodec(), ZstdCodec(level=3, checksum=crc)],
        index_codecs=[BytesCodec(), Crc32cCodec()] if crc else [BytesCodec()],
        index_location=index_location,
        subchunk_write_order=order,
    )


@pytest.mark.parametrize("keys", ["slash", "v2"])
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("index_location", ["start", "end"])
@pytest.mark.parametrize("crc", [True, False], ids=["crc32c", "no-crc"])
def test_the_same_shard_files_as_zarr(tmp_path, subtests, blocks_written, keys, empty, index_location, crc):
    data = realistic((3000, 45))  # edge shards on both axes
    data[400:800] = 0  # two all-fill shards per column: their keys (which held data before) are deleted
    data[1000:1050, :16] = 0  # one all-fill inner chunk: left out of its shard
    kwargs = {
        "chunk_key_encoding": KEY_ENCODINGS[keys],
        "config": {"write_empty_chunks": empty},
        "serializer": sharded_zstd(index_location, crc),
        "compressors": None,
    }
    ours, reference = write_both(tmp_path, data, (200, 32), (1000, 45), realistic(data.shape, seed=3), **kwargs)
    assert files(ours) == files(reference)
    assert not [name for name in files(ours) if name.endswith(".partial")]
    whole = 3000 // 200  # the shards of the first column: the second is cut by the edge
    assert blocks_written["chunks"] == whole - (0 if empty else 2)
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(ours, read_only=True))[...], data)
    assert_independent_readers_match(ours, data, subtests)  # tensorstore and zarrs


@pytest.mark.parametrize("order", ["morton", "lexicographic", "colexicographic", "unordered"])
def test_shards_keep_zarrs_write_order(tmp_path, blocks_written, order):
    data = realistic((800, 64))
    kwargs = {"serializer": sharded_zstd("end", True, order), "compressors": None}
    ours, reference = write_both(tmp_path, data, (400, 64), (800, 64), **kwargs)
    assert blocks_written["chunks"] == 2
    assert files(ours) == files(reference)


def test_only_zstd_alone_in_a_local_store_of_a_large_dataset(tmp_path, monkeypatch):
    data = realistic((400, 8))

    def target(store, **kwargs):
        array = make_array(store, data.shape, data.dtype, (100, 8), **kwargs)
        return DatasetWrite(array, NumpyIterator(data)).target

    monkeypatch.setattr(native, "NATIVE_MIN_BYTES", 0)
    assert target(zarr.storage.LocalStore(tmp_path / "a.zarr")).native is not None
    assert target(zarr.storage.LocalStore(tmp_path / "b.zarr"), compressors=GzipCodec()).native is None
    assert target(zarr.storage.LocalStore(tmp_path / "c.zarr"), shards=(200, 8)).native is not None
    assert target(zarr.storage.LocalStore(tmp_path / "g.zarr"), shards=(200, 8), compressors=GzipCodec()).native is None
    assert target(zarr.storage.MemoryStore()).native is None
    monkeypatch.setattr(native, "NATIVE_MIN_BYTES", data.nbytes + 1)
    monkeypatch.setattr(native, "_compiled", functools.cache(native._compiled.__wrapped__))  # a new process
    small = target(zarr.storage.LocalStore(tmp_path / "d.zarr"))
    assert small.native is None  # not worth numba's start-up
    assert native.prepare()  # compiled now (a program's start): every dataset it suits uses it
    assert small.native is None  # decided once per target
    assert target(zarr.storage.LocalStore(tmp_path / "e.zarr")).native is not None
    copy = pickle.loads(pickle.dumps(target(zarr.storage.LocalStore(tmp_path / "f.zarr"))))
    assert "native" not in vars(copy)  # made again where it is unpickled


@pytest.mark.parametrize("shards", [None, (100, 16)], ids=["chunks", "shards"])
def test_a_failing_file_falls_back_and_names_the_key(tmp_path, blocks_written, shards):
    """A unit whose key is a directory cannot be renamed into place: the loop stops there and
    removes its temporary file, the units before it are written, and the Python path raises
    the OS's error naming that key; no temporary file is left."""
    data = realistic((1000, 16))
    root = tmp_path / "a.zarr"
    chunks = (100, 16) if shards is None else (50, 16)
    array = make_array(zarr.storage.LocalStore(root), data.shape, data.dtype, chunks, shards)
    blocker = root / "c" / "3" / "0"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_bytes(b"x")
    with pytest.raises(  # errors say "chunk" for a shard too (a write unit's coordinates)
        ChunkWriteError, match=r"chunk \(3, 0\).*storing key 'c/3/0'.*(IsADirectory|Directory not empty)"
    ):
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(1000, 16)))], max_workers=1)
    assert blocks_written["blocks"] >= 1 and blocks_written["chunks"] == 3
    names = [os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns]
    assert not [n for n in names if n.endswith(".partial")], names
    for row in range(3):
        stored = zarr.open_array(zarr.storage.LocalStore(root, read_only=True))[row * 100 : (row + 1) * 100]
        np.testing.assert_array_equal(stored, data[row * 100 : (row + 1) * 100])


def test_a_second_process_loads_the_loop_from_numbas_cache(tmp_path):
    """The C functions are bound by name, so numba keeps the compiled loop on disk: the first
    process compiles it, the next loads it (and its files are still zarr's: the other tests)."""
    import subprocess
    import sys

    probe = (
        "from hdmf_zarr_parallel.cpu import native, native_kernel; assert native.prepare(); "
        "print(sum(native_kernel.write_units.stats.cache_hits.values()))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    hits = [
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True) for _ in "ab"
    ]
    assert [int(run.stdout.split()[-1]) for run in hits] == [0, 1]


@pytest.fixture
def batches_written(monkeypatch):
    """Every local sink writes its batches natively (the loop runs in the process); counts the files
    it wrote that way."""
    assert native.prepare()
    real = native.NativeFiles.write
    counts = {"batches": 0, "files": 0}

    def counting(self, blobs, tmps, paths):
        done = real(self, blobs, tmps, paths)
        counts["batches"] += 1
        counts["files"] += done
        return done

    monkeypatch.setattr(native.NativeFiles, "write", counting)
    return counts


@pytest.mark.parametrize("layout", ["gzip chunks", "zstd shards"])
def test_gpu_engine_stores_write_zarrs_files(tmp_path, subtests, monkeypatch, batches_written, layout):
    """The GPU engine's store threads (host lane here) hand a task's encoded units to the sink: chunks,
    whatever their codec, go in one native call per batch; shards go as their pieces (inner chunks,
    index), one ``os.writev`` each, never joined. The files are zarr's, byte for byte (shards hold the
    same inner chunks and index, in C order where zarr uses its write order: same keys)."""
    from test_gpu_engine_cpu import gpu_write

    gathered = []
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, pieces: gathered.append(len(pieces)) or real_writev(fd, pieces))

    data = realistic((2000, 32))
    data[200:400] = 0  # all-fill units: deleted, not written
    if layout == "gzip chunks":
        kwargs = {"chunks": (100, 16), "compressors": GzipCodec(level=5)}
    else:
        kwargs = {"chunks": (50, 16), "shards": (200, 32), "compressors": ZstdCodec(level=3)}
    roots = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    ours, reference = (
        zarr.create_array(zarr.storage.LocalStore(r), shape=data.shape, dtype=data.dtype, **kwargs) for r in roots
    )
    ours[...] = reference[...] = realistic(data.shape, seed=5)
    from conftest import gzip_clock_frozen

    with gzip_clock_frozen():
        gpu_write([(ours, NumpyIterator(data, buffer_shape=(400, 32)))], batch_bytes=128 << 10)
        reference[...] = data
    if layout == "gzip chunks":
        assert files(roots[0]) == files(roots[1])
    assert sorted(files(roots[0])) == sorted(files(roots[1]))
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(roots[0], read_only=True))[...], data)
    if layout == "gzip chunks":
        assert batches_written["batches"] >= 2
        assert batches_written["files"] == 2000 // 100 * 2 - 4 and not gathered
    else:  # each stored shard: its 8 inner chunks and its index in one call
        assert batches_written["files"] == 0 and gathered == [8 + 1] * (2000 // 200 - 1)
    assert not [name for name in files(roots[0]) if name.endswith(".partial")]
    assert_independent_readers_match(roots[0], data, subtests)


def test_a_failing_file_in_a_native_batch_names_its_key(tmp_path, batches_written):
    """The batch's files before the failing one are written, that one raises the OS's error naming
    its key through the Python path, the rest are not written, and no temporary file is left."""
    from hdmf_zarr_parallel.write.sink import LocalFileSink, make_sink

    root = tmp_path / "a.zarr"
    array = zarr.create_array(zarr.storage.LocalStore(root), shape=(800, 16), dtype="uint8", chunks=(100, 16))
    blocker = root / "c" / "2" / "0"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_bytes(b"x")
    sink = make_sink(array, "a")
    assert isinstance(sink, LocalFileSink)
    blobs = [((row, 0), bytes([row]) * (1000 + row)) for row in range(5)]
    with pytest.raises(
        ChunkWriteError, match=r"chunk \(2, 0\).*storing key 'c/2/0'.*(IsADirectory|Directory not empty)"
    ):
        sink.put_many([*blobs, ((6, 0), None)])
    assert batches_written == {"batches": 1, "files": 2}  # what was left went through the Python path
    names = [os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns]
    assert not [n for n in names if n.endswith(".partial")], names
    assert [(root / "c" / str(row) / "0").read_bytes() for row in range(2)] == [b for _, b in blobs[:2]]
    assert not (root / "c" / "3" / "0").exists()


@pytest.mark.parametrize("level", [0, 7])
def test_host_lanes_batched_zstd_is_numcodecs_zstd(level):
    """Where the native loop runs, the host lane compresses a batch's zstd chunks in one GIL-free call
    (nvCOMP's stand-in), into one buffer of fixed slots as nvCOMP does: the frames are numcodecs'."""
    import numcodecs

    from hdmf_zarr_parallel.gpu.lanes import HostLane
    from hdmf_zarr_parallel.gpu.plan import classify

    assert native.prepare()
    array = make_array(zarr.storage.MemoryStore(), (64, 40), "int16", (8, 40), compressors=ZstdCodec(level=level))
    plan = classify(array)
    rows = realistic((8, 8 * 40)).astype("<i2")
    rows[3] = 0
    picked = [0, 2, 3, 7]
    lane = HostLane()
    encoded = lane.encode(plan, rows, picked)
    assert lane._native[plan.level or 0] is not None
    assert len({id(view.obj) for view in encoded}) == 1  # one buffer for the batch
    reference = numcodecs.Zstd(level=level)
    assert [bytes(view) for view in encoded] == [reference.encode(rows[i].tobytes()) for i in picked]
