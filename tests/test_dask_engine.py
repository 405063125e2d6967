"""engine="dask" on a real LocalCluster with two worker processes: exact round trips, errors, a lost worker."""

from __future__ import annotations

import os
import time
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import zarr
from hdmf.data_utils import DataChunkIterator
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4

from conftest import BlockIterator, FailingNumpyIterator, NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError, NWBParallelZarrIO
from hdmf_zarr_parallel.gpu.lanes import HostLane
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture
def dask_client(client):
    """The module's client, with both workers up (a test may have killed one)."""
    client.wait_for_workers(2, timeout=60)
    return client


def read_back(store, path=""):
    return zarr.open_array(store, mode="r", path=path)[...]


def chunk_keys(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("c/*") if p.is_file())


# -- helpers that run on the workers (importable there by module name) ---------------------------
class SettingsStore(zarr.storage.LocalStore):
    """A local store with extra keyword-only settings that survive ``with_read_only``."""

    settings: tuple[str, ...] = ()

    def with_read_only(self, read_only=False):
        return type(self)(self.root, read_only=read_only, **{k: getattr(self, k) for k in self.settings})


class PidLoggingIterator(NumpyIterator):
    """Records, as files in ``log_dir``, which processes read its regions."""

    def __init__(self, array, log_dir, **kwargs):
        self.log_dir = str(log_dir)
        super().__init__(array, **kwargs)

    def __reduce__(self):
        return (_rebuild_pid_logging, (self.array, self.log_dir, self._init_kwargs))

    def _get_data(self, selection):
        Path(self.log_dir, f"read-{os.getpid()}").touch()
        return super()._get_data(selection)


def _rebuild_pid_logging(array, log_dir, kwargs):
    return PidLoggingIterator(array, log_dir, **kwargs)


class SlowPidLoggingIterator(PidLoggingIterator):
    def _get_data(self, selection):
        time.sleep(0.02)
        return super()._get_data(selection)

    def __reduce__(self):
        return (_rebuild_slow_pid_logging, (self.array, self.log_dir, self._init_kwargs))


def _rebuild_slow_pid_logging(array, log_dir, kwargs):
    return SlowPidLoggingIterator(array, log_dir, **kwargs)


class PidLoggingBlocks(BlockIterator):
    """A sequential iterator that records which process reads it (it is never pickled)."""

    def __next__(self):
        self.reader_pids = getattr(self, "reader_pids", set()) | {os.getpid()}
        return super().__next__()

    def __reduce__(self):
        raise TypeError("a live sequential reader")


class PidLoggingStore(SettingsStore):
    """A local store that records which processes store chunks."""

    settings = ("log_dir",)

    def __init__(self, root, *, log_dir, **kwargs):
        super().__init__(root, **kwargs)
        self.log_dir = str(log_dir)

    def set_sync(self, key, value):
        if "/c/" in f"/{key}":
            Path(self.log_dir, f"store-{os.getpid()}").touch()
        super().set_sync(key, value)


class FullDiskStore(zarr.storage.LocalStore):
    bad_key = "c/3/0"

    def set_sync(self, key, value):
        if key.endswith(self.bad_key):
            raise OSError("No space left on device")
        super().set_sync(key, value)


class DyingStore(SettingsStore):
    """Kills its worker process once, halfway through writing ``fatal_key``: a truncated
    file is left where the chunk goes, as a crash during a non-atomic write leaves it."""

    settings = ("marker", "fatal_key")

    def __init__(self, root, *, marker, fatal_key, **kwargs):
        super().__init__(root, **kwargs)
        self.marker = str(marker)
        self.fatal_key = fatal_key

    def set_sync(self, key, value):
        if key == self.fatal_key:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # the retry: write normally
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                path = Path(self.root, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(value.to_bytes()[: len(value) // 2])
                os._exit(1)
        super().set_sync(key, value)


class ElsewhereStore(SettingsStore):
    """A local path that workers resolve to another (empty) directory, as on a node without the mount."""

    settings = ("elsewhere",)

    def __init__(self, root, *, elsewhere, **kwargs):
        super().__init__(root, **kwargs)
        self.elsewhere = str(elsewhere)

    def __reduce__(self):
        return (zarr.storage.LocalStore, (self.elsewhere,))


class SlowIterator(NumpyIterator):
    def _get_data(self, selection):
        time.sleep(0.02)
        return super()._get_data(selection)

    def __reduce__(self):
        return (_rebuild_slow, (self.array, self._init_kwargs))


def _rebuild_slow(array, kwargs):
    return SlowIterator(array, **kwargs)


class RecordingLane(HostLane):
    """The GPU data path on the host, leaving files in ``log_dir``: ``lane-ID`` when made,
    ``encode-ID`` (a line per batch: its chunk count) and ``closed-ID`` when closed;
    ID is ``<worker pid>-<random>``."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (self.log_dir / f"lane-{self.id}").touch()

    def encode(self, plan, rows, indices):
        with open(self.log_dir / f"encode-{self.id}", "a") as log:
            log.write(f"{len(indices)}\n")
        return super().encode(plan, rows, indices)

    def close(self):
        (self.log_dir / f"closed-{self.id}").touch()


def _worker_gpu_available():
    from hdmf_zarr_parallel.gpu.status import gpu_status

    return gpu_status().available


# -- round trips ---------------------------------------------------------------------------------
# (data shape, chunk shape, shard shape or None, iterator buffer shape)
CASES = {
    "aligned": ((2000, 12), (100, 12), None, (400, 12)),
    "misaligned": ((1999, 13), (64, 5), None, (150, 13)),
    "sharded": ((1001, 17), (32, 8), (128, 16), (100, 17)),
    "3d-sharded": ((40, 33, 7), (4, 11, 7), (8, 22, 7), (5, 33, 7)),
}


@pytest.mark.parametrize("case", CASES)
def test_random_access_round_trips(tmp_path, dask_client, case):
    shape, chunks, shards, buffer = CASES[case]
    data = realistic(shape)
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    array = make_array(store, shape, data.dtype, chunks, shards)
    iterator = PidLoggingIterator(data, tmp_path, buffer_shape=buffer, chunk_shape=buffer)
    report = pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=16_000)
    np.testing.assert_array_equal(read_back(store), data)
    assert report.engine == "dask (2 workers, 2 threads)"
    assert report.bytes_written == data.nbytes
    # read on the workers, never here
    readers = {int(p.name.split("-")[1]) for p in tmp_path.glob("read-*")}
    worker_pids = set(dask_client.run(os.getpid).values())
    assert readers and readers <= worker_pids


@pytest.mark.parametrize(
    ("kind", "shards"), [("DataChunkIterator", None), ("DataChunkIterator", (64, 8)), ("blocks", (64, 8))]
)
def test_sequential_iterators_are_read_here_and_written_by_workers(tmp_path, dask_client, kind, shards):
    data = realistic((999, 9), "float32")
    store = PidLoggingStore(tmp_path / "s.zarr", log_dir=tmp_path)
    array = make_array(store, data.shape, data.dtype, (32, 4), shards)
    if kind == "DataChunkIterator":  # over a generator: sequential, unknown length, not picklable
        iterator = DataChunkIterator(data=(row for row in data), buffer_size=70, maxshape=(None, 9))
    else:
        iterator = PidLoggingBlocks(data, (45, 7))
    pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=64_000)
    np.testing.assert_array_equal(read_back(store), data)
    writers = {int(p.name.split("-")[1]) for p in tmp_path.glob("store-*")}
    worker_pids = set(dask_client.run(os.getpid).values())
    assert writers and writers <= worker_pids and os.getpid() not in writers
    if kind == "blocks":
        assert iterator.reader_pids == {os.getpid()}


def test_fsspec_url_store(tmp_path, dask_client):
    data = realistic((700, 6))
    store = zarr.storage.FsspecStore.from_url(f"file://{tmp_path}/f.zarr", storage_options={"auto_mkdir": True})
    array = make_array(store, data.shape, data.dtype, (50, 6), (100, 6))
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(120, 6)))], engine="dask", client=dask_client)
    np.testing.assert_array_equal(read_back(zarr.storage.LocalStore(tmp_path / "f.zarr")), data)


def test_nwb_file_read_back_with_stock_hdmf_zarr(tmp_path, dask_client):
    from hdmf_zarr import NWBZarrIO, ZarrDataIO
    from pynwb.base import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    series = {
        "aligned": realistic((3000, 8), seed=1),
        "misaligned": realistic((2999, 5), seed=2),
        "sharded": realistic((3001, 16), seed=3),
        "sequential": realistic((1234, 3), seed=4),
        "growing": realistic((777, 5), "float64", seed=5),  # a generator of unknown length
    }
    sources = {
        "aligned": ZarrDataIO(NumpyIterator(series["aligned"], buffer_shape=(1000, 8)), chunks=(500, 8)),
        "misaligned": ZarrDataIO(NumpyIterator(series["misaligned"], buffer_shape=(333, 5)), chunks=(256, 4)),
        "sharded": ZarrDataIO(
            NumpyIterator(series["sharded"], buffer_shape=(500, 16)), chunks=(128, 8), shards=(512, 16)
        ),
        "sequential": DataChunkIterator(data=series["sequential"], buffer_size=100),
        "growing": DataChunkIterator(data=iter(list(series["growing"])), buffer_size=64),
    }
    nwbfile = mock_NWBFile()
    for name, data in sources.items():
        nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=30_000.0))
    path = str(tmp_path / "d.nwb.zarr")
    with NWBParallelZarrIO(path, mode="w", engine="dask", client=dask_client, max_inflight_bytes=100_000) as io:
        io.write(nwbfile)
        assert io.last_write_report.engine.startswith("dask")
        assert io.last_write_report.datasets == 5
    with NWBZarrIO(path, mode="r") as io:
        acquisition = io.read().acquisition
        for name, data in series.items():
            np.testing.assert_array_equal(acquisition[name].data[:], data)


def test_memory_bound_holds_across_the_cluster(tmp_path, dask_client):
    data = realistic((20_000, 12))  # 480 kB through a 24 kB budget
    store = zarr.storage.LocalStore(tmp_path / "m.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 12), (200, 12))
    report = pipeline_write(
        [(array, NumpyIterator(data, buffer_shape=(1000, 12)))],
        engine="dask",
        client=dask_client,
        max_inflight_bytes=24_000,
    )
    assert report.peak_inflight_bytes <= 24_000
    np.testing.assert_array_equal(read_back(store), data)


def test_an_iterator_that_carries_its_data_is_flagged(tmp_path, dask_client, monkeypatch):
    from hdmf_zarr_parallel.engines import dask as dask_engine

    monkeypatch.setattr(dask_engine, "LARGE_PAYLOAD_BYTES", 10_000)
    data = realistic((1000, 8))  # 16 kB, held by the iterator itself
    store = zarr.storage.LocalStore(tmp_path / "w.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 8))
    with pytest.warns(RuntimeWarning, match=r"dataset '/' pickles to .* every Dask task of it carries"):
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(200, 8)))], engine="dask", client=dask_client)
    np.testing.assert_array_equal(read_back(store), data)
    monkeypatch.setattr(dask_engine, "MAX_PAYLOAD_BYTES", 10_000)
    other = make_array(zarr.storage.LocalStore(tmp_path / "x.zarr"), data.shape, data.dtype, (100, 8))
    with pytest.raises(ValueError, match=r"dataset '/': it pickles to .* MiB \(its iterator holds its data\)"):
        pipeline_write([(other, NumpyIterator(data, buffer_shape=(200, 8)))], engine="dask", client=dask_client)
    assert chunk_keys(tmp_path / "x.zarr") == []


def test_tasks_spread_over_every_worker(tmp_path, dask_client):
    data = realistic((4000, 8))
    store = zarr.storage.LocalStore(tmp_path / "p.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 8))
    iterator = SlowPidLoggingIterator(data, tmp_path, buffer_shape=(100, 8))
    pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=12_800)
    np.testing.assert_array_equal(read_back(store), data)
    readers = {int(p.name.split("-")[1]) for p in tmp_path.glob("read-*")}
    assert readers == set(dask_client.run(os.getpid).values())


# -- the GPU path on the workers (HostLane: the GPU engine's data path without a device) ---------
def gpu_write(pairs, client, lane_dir, gpu="always", **options):
    from hdmf_zarr_parallel.engines.dask import DaskEngine

    lane_dir.mkdir(exist_ok=True)
    engine = DaskEngine(client, gpu=gpu, gpu_lane=partial(RecordingLane, str(lane_dir)))
    options = WriteOptions(engine="dask", client=client, **options)
    return write_datasets([DatasetWrite(array, iterator) for array, iterator in pairs], engine, options)


def lane_log(lane_dir: Path) -> dict[str, set[str] | list[int]]:
    """The lanes made and closed, the worker pids that encoded, and every batch's chunk count."""
    names = [p.name for p in lane_dir.iterdir()]
    made = {n.removeprefix("lane-") for n in names if n.startswith("lane-")}
    closed = {n.removeprefix("closed-") for n in names if n.startswith("closed-")}
    batches = [int(line) for p in lane_dir.glob("encode-*") for line in p.read_text().split()]
    pids = {int(p.name.split("-")[1]) for p in lane_dir.glob("encode-*")}
    return {"made": made, "closed": closed, "batches": batches, "pids": pids}


GPU_CASES = {  # (data shape, chunk shape, shard shape or None, buffer shape, codec, sequential)
    "aligned": ((2000, 12), (100, 12), None, (400, 12), ZstdCodec(level=3), False),
    "misaligned": ((1999, 13), (64, 5), None, (150, 13), GzipCodec(level=5), False),
    "sharded": ((1001, 17), (32, 8), (128, 16), (100, 17), LZ4(), False),
    "sequential": ((999, 9), (32, 4), (64, 8), (45, 7), ZstdCodec(), True),
}


@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_path_on_workers_reads_back_exactly(tmp_path, dask_client, case):
    shape, chunks, shards, buffer, codec, sequential = GPU_CASES[case]
    data = realistic(shape, "float32" if sequential else "int16")
    store = zarr.storage.LocalStore(tmp_path / "g.zarr")
    array = make_array(store, shape, data.dtype, chunks, shards, compressors=codec)
    iterator = BlockIterator(data, buffer) if sequential else NumpyIterator(data, buffer_shape=buffer)
    report = gpu_write([(array, iterator)], dask_client, tmp_path / "lanes", max_inflight_bytes=16_000)
    np.testing.assert_array_equal(read_back(store), data)
    assert report.bytes_written == data.nbytes
    log = lane_log(tmp_path / "lanes")
    # every chunk that holds data (inner chunks past the array's edge are all fill: skipped)
    n_chunks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks, strict=True)]))
    assert sum(log["batches"]) == n_chunks, "every chunk was encoded by a lane"
    assert log["pids"] and log["pids"] <= set(dask_client.run(os.getpid).values())
    assert 1 <= len(log["made"]) <= 2, "one lane per worker thread, reused by its tasks"
    assert log["closed"] == log["made"], "every lane is closed when the write ends"


def test_gpu_path_on_workers_leaves_blosc_to_the_cpu_codecs(tmp_path, dask_client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="hdmf_zarr_parallel")
    store = zarr.storage.LocalStore(tmp_path / "g.zarr")
    root = zarr.open_group(store, mode="w")
    data = realistic((800, 10))
    blosclz = BloscCodec(cname="blosclz")  # a blosc the GPU path does not build
    blosc = root.create_array("blosc", shape=data.shape, dtype=data.dtype, chunks=(50, 10), compressors=blosclz)
    zstd = root.create_array("zstd", shape=data.shape, dtype=data.dtype, chunks=(50, 10))
    pairs = [(blosc, NumpyIterator(data, buffer_shape=(200, 10))), (zstd, NumpyIterator(data, buffer_shape=(200, 10)))]
    gpu_write(pairs, dask_client, tmp_path / "lanes")
    for name in ("blosc", "zstd"):
        np.testing.assert_array_equal(zarr.open_array(store, path=name, mode="r")[...], data)
    assert sum(lane_log(tmp_path / "lanes")["batches"]) == 16, "the zstd chunks only"
    assert "dataset 'blosc' is encoded with the CPU codecs on the Dask workers: codecs: blosc" in caplog.text


@pytest.mark.parametrize("gpu", ["never", "auto"])
def test_cpu_codecs_when_gpu_is_never_or_workers_have_none(tmp_path, dask_client, gpu):
    if gpu == "auto" and any(dask_client.run(_worker_gpu_available).values()):
        pytest.skip("the workers have a usable GPU")
    data = realistic((1000, 8))
    store = zarr.storage.LocalStore(tmp_path / "c.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 8), (200, 8))
    gpu_write([(array, NumpyIterator(data, buffer_shape=(200, 8)))], dask_client, tmp_path / "lanes", gpu=gpu)
    np.testing.assert_array_equal(read_back(store), data)
    assert list((tmp_path / "lanes").iterdir()) == [], "no lane was made"


def test_gpu_always_without_a_device_names_the_dataset_and_why(tmp_path, dask_client):
    from hdmf_zarr_parallel.engines.dask import DaskEngine

    if any(dask_client.run(_worker_gpu_available).values()):
        pytest.skip("the workers have a usable GPU")
    with pytest.raises(ValueError, match="gpu must be one of 'auto', 'never', 'always'; got 'yes'"):
        DaskEngine(dask_client, gpu="yes")
    data = realistic((400, 4))
    store = zarr.storage.LocalStore(tmp_path / "n.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 4))
    engine = DaskEngine(dask_client, gpu="always")  # the default NvcompLane
    with pytest.raises(ChunkWriteError, match=r"dataset '/'.*region \[\d+:.*cannot start a GPU lane \(NvcompLane"):
        write_datasets(
            [DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 4)))],
            engine,
            WriteOptions(engine="dask", client=dask_client),
        )


def test_store_failure_on_the_gpu_path_names_the_chunk(tmp_path, dask_client):
    store = FullDiskStore(tmp_path / "full.zarr")
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    with pytest.raises(ChunkWriteError, match=r"chunk \(3, 0\) while storing key 'c/3/0'.*No space left"):
        gpu_write([(array, NumpyIterator(data, buffer_shape=(200, 4)))], dask_client, tmp_path / "lanes")
    log = lane_log(tmp_path / "lanes")
    assert log["made"] and log["closed"] == log["made"]


# -- the current client, and refusals before any data moves --------------------------------------
def test_current_client_is_used(tmp_path, dask_client):
    data = realistic((300, 4))
    store = zarr.storage.LocalStore(tmp_path / "c.zarr")
    array = make_array(store, data.shape, data.dtype, (50, 4))
    with dask_client.as_current():
        report = pipeline_write([(array, NumpyIterator(data, buffer_shape=(100, 4)))], engine="dask")
    assert report.engine.startswith("dask")
    np.testing.assert_array_equal(read_back(store), data)


def test_unpicklable_iterator_is_refused_naming_the_dataset(tmp_path, dask_client):
    class LocalIterator(NumpyIterator):
        def __reduce__(self):
            raise TypeError("holds an open file handle")

    data = realistic((300, 4))
    store = zarr.storage.LocalStore(tmp_path / "u.zarr")
    root = zarr.open_group(store, mode="w")
    array = root.create_array("probe", shape=data.shape, dtype=data.dtype, chunks=(50, 4))
    with pytest.raises(TypeError, match=r"dataset 'probe'.*LocalIterator.*cannot be pickled.*engine='threads'"):
        pipeline_write([(array, LocalIterator(data, buffer_shape=(100, 4)))], engine="dask", client=dask_client)
    assert chunk_keys(tmp_path / "u.zarr") == []


@pytest.mark.parametrize("kind", ["MemoryStore", "fsspec-memory"])
def test_stores_workers_cannot_see_are_refused(dask_client, kind):
    store = (
        zarr.storage.MemoryStore()
        if kind == "MemoryStore"
        else zarr.storage.FsspecStore.from_url("memory://hzp-dask-test.zarr")
    )
    data = realistic((100, 2))
    array = make_array(store, data.shape, data.dtype, (10, 2))
    match = "MemoryStore" if kind == "MemoryStore" else "memory://"
    with pytest.raises(ValueError, match=rf"cannot write dataset '/'.*{match}"):
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(50, 2)))], engine="dask", client=dask_client)
    assert not any(k.startswith("c/") for k in _keys(store))


def test_a_path_workers_do_not_mount_is_refused(tmp_path, dask_client):
    (tmp_path / "elsewhere").mkdir()
    store = ElsewhereStore(tmp_path / "here.zarr", elsewhere=tmp_path / "elsewhere")
    data = realistic((100, 2))
    array = make_array(store, data.shape, data.dtype, (10, 2))
    with pytest.raises(ValueError, match=r"worker tcp://.* cannot see dataset\(s\) / in ElsewhereStore"):
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(50, 2)))], engine="dask", client=dask_client)
    assert chunk_keys(tmp_path / "here.zarr") == [] and list((tmp_path / "elsewhere").iterdir()) == []


def test_client_arguments_are_checked(tmp_path, dask_client):
    with pytest.raises(ValueError, match="client= is only used by engine='dask'"):
        NWBParallelZarrIO(str(tmp_path / "x.nwb.zarr"), mode="w", engine="threads", client=dask_client)
    with pytest.raises(TypeError, match="client must be a distributed.Client, got str"):
        NWBParallelZarrIO(str(tmp_path / "x.nwb.zarr"), mode="w", engine="dask", client="tcp://nowhere:8786")


# -- failures ------------------------------------------------------------------------------------
def test_iterator_failure_on_a_worker_names_dataset_and_region(tmp_path, dask_client):
    data = realistic((4000, 8))
    store = zarr.storage.LocalStore(tmp_path / "f.zarr")
    array = make_array(store, data.shape, data.dtype, (100, 8))
    iterator = FailingNumpyIterator(data, fail_at_row=2500, buffer_shape=(500, 8), chunk_shape=(100, 8))
    start = time.monotonic()
    with pytest.raises(ChunkWriteError, match=r"dataset '/'.*reading region \[2400:2600, 0:8\].*disk on fire") as err:
        pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=16_000)
    assert time.monotonic() - start < 30
    assert err.value.dataset == "/"


@pytest.mark.parametrize("sequential", [False, True])
def test_store_failure_on_a_worker_names_the_chunk(tmp_path, dask_client, sequential):
    store = FullDiskStore(tmp_path / "full.zarr")
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    iterator = BlockIterator(data, (30, 4)) if sequential else NumpyIterator(data, buffer_shape=(200, 4))
    with pytest.raises(ChunkWriteError, match=r"chunk \(3, 0\) while storing key 'c/3/0'.*No space left"):
        pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=4_000)


def test_worker_killed_mid_write_is_retried_and_chunks_are_whole(tmp_path, dask_client):
    data = realistic((6000, 8), seed=7)
    marker = tmp_path / "killed"
    store = DyingStore(tmp_path / "k.zarr", marker=marker, fatal_key="c/20/0")
    array = make_array(store, data.shape, data.dtype, (100, 8), (200, 8))
    before = set(dask_client.run(os.getpid).values())
    iterator = SlowIterator(data, buffer_shape=(200, 8))
    report = pipeline_write([(array, iterator)], engine="dask", client=dask_client, max_inflight_bytes=12_800)
    killed = int(marker.read_text())
    assert killed in before  # a worker did die, halfway through a shard
    dask_client.wait_for_workers(2, timeout=60)
    assert killed not in set(dask_client.run(os.getpid).values())  # the nanny replaced it
    assert report.bytes_written == data.nbytes
    np.testing.assert_array_equal(read_back(store), data)
    # every shard is whole: stock zarr decodes each one on its own
    reference = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (100, 8), (200, 8))
    reference[...] = data
    assert Path(tmp_path / "k.zarr" / "c/20/0").read_bytes() == _get(reference.store, "c/20/0")


def _keys(store):
    from zarr.core.sync import sync

    async def collect():
        return [k async for k in store.list()]

    return sync(collect())


def _get(store, key):
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    return sync(store.get(key, prototype=default_buffer_prototype())).to_bytes()


def test_dask_gpu_reaches_the_engine_through_the_io_object(tmp_path, dask_client):
    from hdmf_zarr_parallel import NWBParallelZarrIO

    path = tmp_path / "never.nwb.zarr"
    with pytest.raises(ValueError, match="dask_gpu must be 'auto', 'never' or 'always'; got 'maybe'"):
        NWBParallelZarrIO(str(path), mode="w", engine="dask", client=dask_client, dask_gpu="maybe")
    assert not path.exists()
    with NWBParallelZarrIO(str(path), mode="w", engine="dask", client=dask_client, dask_gpu="never") as io:
        assert io._engine.gpu == "never"
