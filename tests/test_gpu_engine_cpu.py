"""The GPU engine's scheduling, chunk carving, shard assembly and failure handling, without a GPU.

``HostLane`` performs each device step on the host (numpy + numcodecs), so everything
except the nvCOMP call itself runs for real here and is checked by stock zarr reads, and by
two independent Zarr v3 readers (tensorstore, zarrs: ``readers.py``).
"""

import itertools
import logging
import math
import threading
import time

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Shuffle, Zlib

from conftest import BlockIterator, FailingNumpyIterator, NumpyIterator, make_array, realistic
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.gpu.engine import GpuEngine
from hdmf_zarr_parallel.gpu.lanes import HostLane
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.rows import chunk_matrix, fill_rows
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets
from readers import assert_independent_readers_match

CODECS = {"zstd": ZstdCodec(level=3), "gzip": GzipCodec(level=5), "lz4": LZ4()}


class CountingLane(HostLane):
    instances: list["CountingLane"] = []

    def __init__(self):
        super().__init__()
        self.calls = []
        self.closed = False
        CountingLane.instances.append(self)

    def encode(self, plan, rows, indices):
        self.calls.append(len(indices))
        return super().encode(plan, rows, indices)

    def close(self):
        self.closed = True


class SlowLane(CountingLane):
    """A lane slow enough that CPU helpers get to shave rows off the queued tasks."""

    def encode(self, plan, rows, indices):
        time.sleep(0.05)
        return super().encode(plan, rows, indices)


class TightMemoryLane(CountingLane):
    """Runs out of device memory for batches of more than ``limit`` chunks."""

    limit = 3

    def encode(self, plan, rows, indices):
        if len(indices) > self.limit:
            self.calls.append(-len(indices))
            raise MemoryError("out of device memory")
        return super().encode(plan, rows, indices)


def gpu_write(pairs, lane=CountingLane, batch_bytes=64 << 10, cpu_helpers=0, **options):
    options = WriteOptions(engine="gpu", max_workers=3, **options)
    engine = GpuEngine(3, batch_bytes, lanes=2, lane_factory=lane, cpu_helpers=cpu_helpers)
    return write_datasets([DatasetWrite(a, i) for a, i in pairs], engine, options)


@pytest.fixture(autouse=True)
def fresh_lanes():
    CountingLane.instances.clear()
    yield
    assert all(lane.closed for lane in CountingLane.instances), "every lane is released after the write"
    assert not [t for t in threading.enumerate() if t.name.startswith("hzp-")]


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("shards", [None, (64, 16)])
@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32", "float64", "uint8"])
@pytest.mark.parametrize("kind", ["aligned", "misaligned", "sequential"])
def test_gpu_path_reads_back_exactly_with_stock_zarr(store, subtests, codec, shards, dtype, kind):
    data = realistic((301, 37), dtype)
    array = make_array(store, data.shape, data.dtype, (16, 8), shards, compressors=CODECS[codec])
    iterator = {
        "aligned": lambda: NumpyIterator(data, buffer_shape=(128, 37)),
        "misaligned": lambda: NumpyIterator(data, buffer_shape=(50, 37)),
        "sequential": lambda: BlockIterator(data, (23, 37)),
    }[kind]()
    gpu_write([(array, iterator)])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert sum(sum(lane.calls) for lane in CountingLane.instances) > 0, "the chunks went through the lanes"
    assert_independent_readers_match(store, data, subtests)


def test_one_encode_call_per_batch(store):
    data = realistic((1024, 16))
    array = make_array(store, data.shape, data.dtype, (32, 16))  # 1 KiB chunks
    gpu_write([(array, NumpyIterator(data, buffer_shape=(256, 16)))], batch_bytes=8 << 10)
    calls = [c for lane in CountingLane.instances for c in lane.calls]
    assert sorted(calls) == [8] * 4  # 32 KiB / 8 KiB batches of eight 1 KiB chunks


def test_all_fill_chunks_and_shards_are_not_stored(store, subtests):
    data = np.zeros((256, 8), "int16")
    data[40:50] = 3
    array = make_array(store, data.shape, data.dtype, (16, 8), (64, 8), compressors=ZstdCodec())
    gpu_write([(array, NumpyIterator(data, buffer_shape=(128, 8)))])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert sorted(p.name for p in (store.root / "c").iterdir()) == ["0"]
    assert [p.name for p in (store.root / "c" / "0").iterdir()] == ["0"]
    assert_independent_readers_match(store, data, subtests)


def test_unsupported_chains_go_to_the_cpu_pool_with_a_reason(tmp_path, caplog, subtests):
    caplog.set_level(logging.WARNING, logger="hdmf_zarr_parallel")
    store = zarr.storage.LocalStore(tmp_path / "g.zarr")
    root = zarr.open_group(store, mode="w")
    data = realistic((200, 10))
    blosclz = BloscCodec(cname="blosclz")  # a blosc the GPU path does not build
    blosc = root.create_array("blosc", shape=data.shape, dtype=data.dtype, chunks=(20, 10), compressors=blosclz)
    zstd = root.create_array("zstd", shape=data.shape, dtype=data.dtype, chunks=(20, 10))
    gpu_write([(blosc, NumpyIterator(data, buffer_shape=(50, 10))), (zstd, NumpyIterator(data, buffer_shape=(50, 10)))])
    for name in ("blosc", "zstd"):
        np.testing.assert_array_equal(zarr.open_array(store, path=name, mode="r")[...], data)
        assert_independent_readers_match(tmp_path / "g.zarr" / name, data, subtests, name=name)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "dataset 'blosc' is written by the CPU pool: codecs: blosc with cname 'blosclz' "
        "(BloscLZ has no nvCOMP equivalent) is not supported on the GPU path"
    ]


def test_out_of_memory_retries_with_smaller_batches(store, caplog, subtests):
    caplog.set_level(logging.INFO, logger="hdmf_zarr_parallel")
    data = realistic((2048, 8))  # four tasks of 32 chunks
    array = make_array(store, data.shape, data.dtype, (16, 8))
    gpu_write([(array, NumpyIterator(data, buffer_shape=(512, 8)))], lane=TightMemoryLane, batch_bytes=1 << 20)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    calls = [c for lane in TightMemoryLane.instances for c in lane.calls]
    assert calls[:4] == [-32, -16, -8, -4] and max(calls) <= 3
    assert "retrying with batches of 2 chunks" in caplog.text
    assert_independent_readers_match(store, data, subtests)


def test_out_of_memory_on_a_single_chunk_is_a_clear_error(store):
    TightMemoryLane.limit = 0
    try:
        data = realistic((64, 8))
        array = make_array(store, data.shape, data.dtype, (16, 8))
        with pytest.raises(ChunkWriteError, match="ran out of memory encoding a single chunk of 256 bytes"):
            gpu_write([(array, NumpyIterator(data, buffer_shape=(64, 8)))], lane=TightMemoryLane)
    finally:
        TightMemoryLane.limit = 3


def test_store_failure_is_re_raised_and_lanes_released(tmp_path):
    class FullDisk(zarr.storage.LocalStore):
        def set_sync(self, key, value):
            if key.endswith("c/2/0"):
                raise OSError("No space left on device")
            super().set_sync(key, value)

    store = FullDisk(tmp_path / "full.zarr")
    data = realistic((400, 8))
    array = make_array(store, data.shape, data.dtype, (50, 8), compressors=GzipCodec())
    with pytest.raises(ChunkWriteError, match=r"chunk \(2, 0\) while storing key 'c/2/0'"):
        gpu_write([(array, NumpyIterator(data, buffer_shape=(100, 8)))])


def test_engine_gpu_without_a_device_refuses_before_writing(tmp_path):
    from hdmf_zarr_parallel import NWBParallelZarrIO
    from hdmf_zarr_parallel.gpu.status import gpu_status

    if gpu_status().available:
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(ValueError, match="engine='gpu' needs a usable NVIDIA GPU"):
        NWBParallelZarrIO(str(tmp_path / "x.nwb.zarr"), mode="w", engine="gpu")
    assert not (tmp_path / "x.nwb.zarr").exists()


def test_negative_zero_is_not_the_zero_fill_value(store, subtests):
    data = np.zeros((64, 8), "float32")
    data[16:32] = -0.0  # bitwise different from the 0.0 fill value: zarr stores it, so must we
    array = make_array(store, data.shape, data.dtype, (16, 8), compressors=ZstdCodec())
    gpu_write([(array, NumpyIterator(data, buffer_shape=(64, 8)))])
    back = zarr.open_array(store, mode="r")[...]
    assert np.signbit(back[16:32]).all() and not np.signbit(back[:16]).any()
    assert_independent_readers_match(store, data, subtests)  # bit for bit: -0.0 is not 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda r: st.tuples(
            st.tuples(*[st.integers(1, 3)] * r),  # units in the tile
            st.tuples(*[st.integers(1, 3)] * r),  # inner chunks per unit
            st.tuples(*[st.integers(1, 4)] * r),  # chunk shape
            st.tuples(*[st.integers(0, 3)] * r),  # elements missing at the tile's far edge
        )
    )
)
def test_chunk_matrix_orders_chunks_as_units_then_inner_chunks(case):
    units, inner, chunk, missing = case
    full = [n * k * c for n, k, c in zip(units, inner, chunk, strict=True)]
    shape = tuple(max(1, f - m) for f, m in zip(full, missing, strict=True))
    tile = np.arange(1, np.prod(shape) + 1, dtype="int32").reshape(shape)
    matrix = chunk_matrix(np, tile, units, inner, chunk, 0)
    padded = np.zeros(full, "int32")
    padded[tuple(slice(0, s) for s in shape)] = tile
    unit_shape = [k * c for k, c in zip(inner, chunk, strict=True)]
    for u, unit in enumerate(itertools.product(*(range(n) for n in units))):
        for i, sub in enumerate(itertools.product(*(range(k) for k in inner))):
            region = tuple(
                slice(a * s + b * c, a * s + (b + 1) * c)
                for a, s, b, c in zip(unit, unit_shape, sub, chunk, strict=True)
            )
            np.testing.assert_array_equal(matrix[u, i], padded[region].reshape(-1))
    assert list(fill_rows(np, matrix.reshape(-1, matrix.shape[2]), 0)) == [
        not row.any() for row in matrix.reshape(-1, matrix.shape[2])
    ]


def test_the_data_path_is_plain_functions_usable_without_the_engine(store, subtests):
    """What the Dask engine's GPU workers call: encode on a lane, then store, in the calling thread."""
    from hdmf_zarr_parallel.gpu.datapath import encode_region_on_lane, encode_units_on_lane, store_encoded
    from hdmf_zarr_parallel.gpu.plan import classify

    data = realistic((300, 20))
    data[64:128] = 0  # two all-fill shards: their keys are deleted, not written
    array = make_array(store, data.shape, data.dtype, (16, 8), (64, 16), compressors=ZstdCodec())
    writer = DatasetWrite(array, NumpyIterator(data, buffer_shape=(128, 20)))
    plan = classify(array)
    lane = TightMemoryLane()  # batches of more than 3 chunks run out of memory: halving still applies
    head = (slice(0, 128), slice(0, 20))
    encoded = encode_region_on_lane(lane, writer, plan, head)
    assert [coords for coords, _ in encoded] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [blob is None for _, blob in encoded] == [False, False, True, True]
    assert store_encoded(writer.target, encoded) == 4
    tail = (slice(128, 300), slice(0, 20))
    grid = writer.target.grid  # edge units are short: padded on the lane
    units = [(c, data[grid.unit_region(c)]) for c in grid.units_overlapping(tail)]
    assert store_encoded(writer.target, encode_units_on_lane(lane, writer.target, plan, units)) == len(units) == 6
    lane.close()
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert lane.calls[0] < 0 and 0 < max(lane.calls) <= 3
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize("shards", [None, (32, 16)])
@pytest.mark.parametrize("kind", ["aligned", "misaligned", "sequential"])
def test_cpu_helpers_share_the_work_and_it_reads_back_exactly(store, subtests, shards, kind):
    data = realistic((1201, 37), "int16")  # big enough for tasks of several unit-rows
    array = make_array(store, data.shape, data.dtype, (16, 8), shards, compressors=ZstdCodec())
    iterator = {
        "aligned": lambda: NumpyIterator(data, buffer_shape=(128, 37)),
        "misaligned": lambda: NumpyIterator(data, buffer_shape=(100, 37)),
        "sequential": lambda: BlockIterator(data, (64, 37)),
    }[kind]()
    gpu_write([(array, iterator)], lane=SlowLane, cpu_helpers=2)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    on_lanes = sum(sum(lane.calls) for lane in SlowLane.instances)
    chunks = math.ceil(1201 / 16) * math.ceil(37 / 8)
    assert 0 < on_lanes < chunks, f"lanes encoded {on_lanes} of {chunks} chunks: helpers took none, or all"
    assert_independent_readers_match(store, data, subtests)


def test_a_read_failure_with_cpu_helpers_is_re_raised(store):
    data = realistic((256, 16))
    array = make_array(store, data.shape, data.dtype, (16, 16))
    iterator = FailingNumpyIterator(data, fail_at_row=250, buffer_shape=(256, 16))
    with pytest.raises(ChunkWriteError, match="disk on fire"):
        gpu_write([(array, iterator)], lane=SlowLane, cpu_helpers=1)


def test_gpu_cpu_helpers_option_is_validated():
    assert WriteOptions(engine="gpu", gpu_cpu_helpers=3).gpu_cpu_helpers == 3
    with pytest.raises(ValueError, match="gpu_cpu_helpers must be >= 0"):
        WriteOptions(gpu_cpu_helpers=-1)
    with pytest.raises(TypeError, match="gpu_cpu_helpers must be an int"):
        WriteOptions(gpu_cpu_helpers="4")


CHAINS_WITH_SHUFFLE_OR_ZLIB = {
    "zlib": lambda size: [Zlib(level=1)],
    "shuffle+zlib": lambda size: [Shuffle(elementsize=size), Zlib(level=4)],  # HDF5's shuffle + gzip
    "shuffle+zstd": lambda size: [Shuffle(elementsize=size), ZstdCodec(level=3)],
    "shuffle+lz4": lambda size: [Shuffle(elementsize=size), LZ4()],
}


@pytest.mark.parametrize("chain", list(CHAINS_WITH_SHUFFLE_OR_ZLIB))
@pytest.mark.parametrize("shards", [None, (64, 16)])
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64"])
def test_shuffle_and_zlib_chains_read_back_exactly_with_stock_zarr(store, subtests, chain, shards, dtype):
    """The byte shuffle and the zlib framing (header, raw deflate, Adler-32) as the lanes do them."""
    data = realistic((301, 37), dtype)
    compressors = CHAINS_WITH_SHUFFLE_OR_ZLIB[chain](np.dtype(dtype).itemsize)
    array = make_array(store, data.shape, data.dtype, (16, 8), shards, compressors=compressors)
    gpu_write([(array, NumpyIterator(data, buffer_shape=(100, 37)))])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert sum(sum(lane.calls) for lane in CountingLane.instances) > 0, "the chunks went through the lanes"
    assert_independent_readers_match(store, data, subtests)


def test_lanes_read_an_undeclared_iterator_one_region_at_a_time(store, subtests):
    """The GPU lanes read through the same DatasetSource.read as the CPU workers: its lock and shape check."""
    from test_concurrent_reads import FileHandleIterator

    data = realistic((2000, 12), seed=4)
    array = make_array(store, data.shape, data.dtype, (250, 12))
    iterator = FileHandleIterator(data)
    gpu_write([(array, iterator)], batch_bytes=6000)  # one 250-row region per task: both lanes busy
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert iterator.most_at_once == 1
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize(
    "chunk_key_encoding",
    [{"name": "default", "separator": "."}, {"name": "v2", "separator": "."}, {"name": "v2", "separator": "/"}],
    ids=["default-dot", "v2-dot", "v2-slash"],
)
@pytest.mark.parametrize("shards", [None, (64, 16)])
def test_lanes_store_under_the_arrays_chunk_keys(store, subtests, chunk_key_encoding, shards):
    """The host-lane path names chunks and shards as the array's chunk-key encoding says."""
    data = realistic((301, 37))
    array = make_array(
        store, data.shape, data.dtype, (16, 8), shards, compressors=ZstdCodec(), chunk_key_encoding=chunk_key_encoding
    )
    gpu_write([(array, NumpyIterator(data, buffer_shape=(50, 37)))])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    assert (store.root / array.metadata.encode_chunk_key((0, 0))).is_file()
    assert sum(sum(lane.calls) for lane in CountingLane.instances) > 0, "the chunks went through the lanes"
    assert_independent_readers_match(store, data, subtests)


@pytest.mark.parametrize("shards", [None, (40, 16)])
@pytest.mark.parametrize("codec", ["lz4", "zlib level 1", "zlib level 4", "zlib level 9"])
def test_framed_chunks_are_written_where_they_lie_as_zarrs_files(tmp_path, monkeypatch, codec, shards):
    """LZ4's header and zlib's header and trailer go around nvCOMP's output without copying it: each file
    (chunk, or shard of such chunks and its index) is written as its pieces with one os.writev, and the
    files are zarr's, byte for byte."""
    import os

    from test_direct_store import files

    data = realistic((200, 32))
    data[40:80] = 0  # all-fill units: deleted, not written
    compressor = LZ4() if codec == "lz4" else Zlib(level=int(codec.split()[-1]))  # zlib's header says its level
    roots = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    kwargs = {"chunks": (10, 16), "shards": shards, "compressors": compressor}
    ours, reference = (make_array(zarr.storage.LocalStore(r), data.shape, data.dtype, **kwargs) for r in roots)
    pieces = []
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, parts: pieces.append(len(parts)) or real_writev(fd, parts))
    gpu_write([(ours, NumpyIterator(data, buffer_shape=(40, 32)))])
    reference[...] = data
    assert files(roots[0]) == files(roots[1])
    per_chunk = 2 if codec == "lz4" else 3
    if shards is None:
        assert pieces == [per_chunk] * (20 * 2 - 4 * 2)
    else:  # a shard: 4 chunks, then its index; 10 shards, 2 of them all fill
        assert pieces == [per_chunk * 4 + 1] * (10 - 2)


def test_a_full_disk_while_writing_a_shards_pieces_names_the_key(tmp_path, monkeypatch):
    """os.writev failing with ENOSPC on a shard: the write raises in the caller naming the dataset and key,
    the OS's errno kept, no temporary file left, every thread and lane gone (the fixture checks)."""
    import errno
    import os

    data = realistic((200, 32))
    root = tmp_path / "a.zarr"
    array = make_array(zarr.storage.LocalStore(root), data.shape, data.dtype, (10, 16), (40, 16))
    calls = [0]
    real_writev = os.writev

    def writev(fd, pieces):
        calls[0] += 1
        if calls[0] == 3:
            real_writev(fd, pieces[:1])  # a torn temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writev(fd, pieces)

    monkeypatch.setattr(os, "writev", writev)
    with pytest.raises(ChunkWriteError, match=r"storing key 'c/\d+/\d+'.*No space left") as err:
        gpu_write([(array, NumpyIterator(data, buffer_shape=(40, 32)))])
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert not [p for p in root.rglob("*") if p.name.endswith(".partial")]
