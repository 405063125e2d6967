"""Reads that never return, and worker processes that die.

``read_timeout`` fails the write with a ``ChunkWriteError`` naming the dataset, the region (or
buffer) and the reading stage, and the write returns at once. Without it, a failure elsewhere
still ends the write promptly: the stuck worker is abandoned, and when its read finally
returns it stores nothing. A killed worker process is named like any other failure.
"""

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import zarr

from conftest import BlockIterator, NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError

HANG_S = 30  # "forever", as far as a test can tell
RELEASE = threading.Event()  # set at the end of each test: the stuck reads of this process return
HANGING = threading.Event()  # set by a read as it gets stuck


def writer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hzp-")]


@pytest.fixture(autouse=True)
def release_stuck_reads():
    RELEASE.clear()
    HANGING.clear()
    yield
    RELEASE.set()
    deadline = time.monotonic() + 10
    while (writer_threads() or multiprocessing.active_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_threads() == []
    assert multiprocessing.active_children() == []


class HangingIterator(NumpyIterator):
    """Random access; the read of the region holding ``hang_at_row`` does not return (until RELEASE,
    which a worker process never sees)."""

    def __init__(self, array, hang_at_row, log=None, **kwargs):
        self.hang_at_row = hang_at_row
        self.log = log  # a file that gets the time (since the epoch) at which the read got stuck
        super().__init__(array, **kwargs)

    def __reduce__(self):
        return (_rebuild_hanging, (self.array, self.hang_at_row, self.log, self._init_kwargs))

    def _get_data(self, selection):
        if selection[0].start <= self.hang_at_row < selection[0].stop:
            if self.log is not None:
                with open(self.log, "w") as f:
                    f.write(repr(time.time()))
            HANGING.set()
            RELEASE.wait(HANG_S)
        return super()._get_data(selection)


def _rebuild_hanging(array, hang_at_row, log, kwargs):
    return HangingIterator(array, hang_at_row, log, **kwargs)


class HangingBlocks(BlockIterator):
    """Sequential; the buffer after the first ``hang_after`` does not come (until RELEASE)."""

    def __init__(self, array, block, hang_after):
        super().__init__(array, block)
        self.remaining = hang_after

    def __next__(self):
        if self.remaining == 0:
            HANGING.set()
            RELEASE.wait(HANG_S)
        self.remaining -= 1
        return super().__next__()


class FailsOnceSomethingHangs(BlockIterator):
    """Sequential; raises as soon as another dataset's read is stuck."""

    def __next__(self):
        assert HANGING.wait(10)
        raise OSError("sensor unplugged")


class KillsItsWorker(NumpyIterator):
    """Reading the region holding ``kill_at_row`` kills the worker process reading it (as the
    kernel's out-of-memory killer would); in the test's own process it only raises."""

    def __init__(self, array, kill_at_row, parent_pid=None, **kwargs):
        self.kill_at_row = kill_at_row
        self.parent_pid = parent_pid or os.getpid()
        super().__init__(array, **kwargs)

    def __reduce__(self):
        return (_rebuild_killer, (self.array, self.kill_at_row, self.parent_pid, self._init_kwargs))

    def _get_data(self, selection):
        if selection[0].start <= self.kill_at_row < selection[0].stop:
            if os.getpid() == self.parent_pid:
                raise AssertionError("read in the test's process, not in a worker process")
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._get_data(selection)


def _rebuild_killer(array, kill_at_row, parent_pid, kwargs):
    return KillsItsWorker(array, kill_at_row, parent_pid, **kwargs)


@pytest.mark.parametrize("engine", ["serial", "threads", "processes"])
def test_read_timeout_fails_a_stuck_region_naming_dataset_and_region(store, engine, tmp_path):
    data = realistic((4000, 8))
    array = make_array(store, data.shape, data.dtype, (100, 8))
    log = tmp_path / "stuck-at"
    iterator = HangingIterator(data, 2000, str(log), buffer_shape=(500, 8), chunk_shape=(100, 8))
    with pytest.raises(
        ChunkWriteError, match=r"dataset '/'.*reading region \[2000:2500, 0:8\].*read_timeout=0.5 s"
    ) as err:
        pipeline_write([(array, iterator)], engine=engine, max_workers=2, read_timeout=0.5)
    assert time.time() - float(log.read_text()) < 5  # from the read getting stuck (in a worker, maybe) to here
    assert err.value.dataset == "/" and err.value.stage == "reading region [2000:2500, 0:8]"
    if engine == "processes":  # the worker stuck in the read was terminated, not waited for
        assert multiprocessing.active_children() == []


@pytest.mark.parametrize("engine", ["serial", "threads"])
def test_read_timeout_fails_a_stuck_sequential_buffer(store, engine):
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    start = time.monotonic()
    with pytest.raises(
        ChunkWriteError,
        match=r"dataset '/'.*reading buffer 5 from the iterator, the one after region \[150:200, 0:4\]"
        r".*no buffer within read_timeout=0.5 s",
    ):
        pipeline_write([(array, HangingBlocks(data, (50, 4), hang_after=4))], engine=engine, read_timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_read_timeout_is_per_read_not_per_write(store):
    class SlowReads(NumpyIterator):
        def _get_data(self, selection):
            time.sleep(0.05)
            return super()._get_data(selection)

    data = realistic((4000, 8))
    array = make_array(store, data.shape, data.dtype, (100, 8))
    pipeline_write([(array, SlowReads(data, buffer_shape=(100, 8)))], max_workers=2, read_timeout=0.5)  # ~2 s
    np.testing.assert_array_equal(array[...], data)


def _write_with(engine, pairs):
    """``pipeline_write`` with ``engine``; ``gpu-host``: the gpu engine's lanes (HostLane, no CPU
    workers sharing), so the stuck read sits in a lane."""
    if engine != "gpu-host":
        return pipeline_write(pairs, engine=engine)
    from hdmf_zarr_parallel import WriteOptions
    from hdmf_zarr_parallel.gpu.engine import GpuEngine
    from hdmf_zarr_parallel.gpu.lanes import HostLane
    from hdmf_zarr_parallel.write.dataset import DatasetWrite
    from hdmf_zarr_parallel.write.pipeline import write_datasets

    gpu = GpuEngine(2, 16 << 10, lanes=2, lane_factory=HostLane, cpu_helpers=0)
    return write_datasets([DatasetWrite(a, i) for a, i in pairs], gpu, WriteOptions(engine="gpu", max_workers=2))


@pytest.mark.parametrize("engine", ["serial", "threads", "gpu-host"])
def test_a_stuck_read_does_not_hold_up_a_failed_write_and_stores_nothing_after_it(tmp_path, engine):
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path / "g.zarr"), mode="w")
    data = realistic((4000, 8))
    stuck = root.create_array("stuck", shape=data.shape, dtype=data.dtype, chunks=(100, 8))
    failing = root.create_array("failing", shape=(100, 4), dtype="int16", chunks=(50, 4))
    iterator = HangingIterator(data, hang_at_row=0, buffer_shape=(500, 8), chunk_shape=(100, 8))
    start = time.monotonic()
    with pytest.raises(ChunkWriteError, match="dataset 'failing'.*sensor unplugged"):
        _write_with(
            engine, [(stuck, iterator), (failing, FailsOnceSomethingHangs(np.zeros((100, 4), "int16"), (50, 4)))]
        )
    assert time.monotonic() - start < 5  # not the HANG_S the stuck read takes
    assert all(t.daemon for t in writer_threads())  # a thread stuck in a read cannot keep Python alive
    stored = sorted(p.name for p in (tmp_path / "g.zarr" / "stuck").rglob("c/*/*"))
    RELEASE.set()  # the stuck read returns: its worker must not store its region now
    deadline = time.monotonic() + 10
    while writer_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_threads() == []
    assert sorted(p.name for p in (tmp_path / "g.zarr" / "stuck").rglob("c/*/*")) == stored
    assert not (tmp_path / "g.zarr" / "stuck" / "c" / "0").exists()


def test_a_killed_worker_process_names_the_dataset_the_region_and_the_stage(store):
    data = realistic((4000, 8))
    array = make_array(store, data.shape, data.dtype, (100, 8))
    iterator = KillsItsWorker(data, kill_at_row=1000, buffer_shape=(500, 8), chunk_shape=(100, 8))
    start = time.monotonic()
    with pytest.raises(
        ChunkWriteError,
        match=r"dataset '/'.*writing region \[\d+:\d+, 0:8\] in a worker process: a worker process died",
    ) as err:
        pipeline_write([(array, iterator)], engine="processes", max_workers=2)
    assert time.monotonic() - start < 30
    assert isinstance(err.value.__cause__, BrokenProcessPool)
    assert multiprocessing.active_children() == []


def test_the_pool_starts_threads_only_for_waiting_tasks_and_abandons_stuck_ones():
    from hdmf_zarr_parallel.engines.pool import DaemonThreadPool

    pool = DaemonThreadPool(100, "hzp-test")
    for i in range(5):  # one task at a time: the idle thread takes the next
        assert pool.submit(lambda i=i: i * 2).result(timeout=5) == i * 2
        time.sleep(0.01)
    assert len(pool._threads) == 1
    stuck = pool.submit(RELEASE.wait, HANG_S)
    queued = [pool.submit(time.sleep, 0) for _ in range(3)]
    assert len(pool._threads) <= 4
    start = time.monotonic()
    left = pool.shutdown(wait=True, cancel_futures=True, timeout=0.2)
    assert time.monotonic() - start < 2
    assert len(left) == 1 and all(t.daemon for t in pool._threads)
    assert not stuck.done() and all(f.done() for f in queued)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(time.sleep, 0)


def test_read_timeout_is_an_io_argument(tmp_path):
    from pynwb import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    from hdmf_zarr_parallel import NWBParallelZarrIO

    nwbfile = mock_NWBFile()
    data = realistic((4000, 8))
    iterator = HangingIterator(data, 3000, buffer_shape=(500, 8), chunk_shape=(100, 8))
    nwbfile.add_acquisition(TimeSeries(name="x", data=iterator, unit="V", rate=1.0))
    start = time.monotonic()
    with NWBParallelZarrIO(str(tmp_path / "t.nwb.zarr"), mode="w", engine="threads", read_timeout=0.5) as io:
        with pytest.raises(ChunkWriteError, match=r"dataset 'acquisition/x/data'.*reading region \[3000:3500, 0:8\]"):
            io.write(nwbfile)
    assert time.monotonic() - start < 10
