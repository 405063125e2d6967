"""Absurd or unusual arguments: refused clearly before anything is written, or capped by a stated rule."""

import logging
import re
import threading

import numpy as np
import pytest
import zarr

from conftest import NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import NWBParallelZarrIO
from hdmf_zarr_parallel.engines import ProcessEngine, ThreadEngine
from hdmf_zarr_parallel.engines import base as engine_base
from hdmf_zarr_parallel.options import WriteOptions


def nwbfile_with(data):
    from pynwb import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    nwbfile = mock_NWBFile()
    nwbfile.add_acquisition(TimeSeries(name="x", data=data, unit="V", rate=1.0))
    return nwbfile


@pytest.fixture
def two_cores(monkeypatch):
    """This machine, as far as the worker caps can tell, has two CPU cores."""
    monkeypatch.setattr(engine_base, "default_workers", lambda: 2, raising=False)
    monkeypatch.setattr("hdmf_zarr_parallel.engines.processes.default_workers", lambda: 2, raising=False)


def test_numpy_integers_are_accepted_and_kept_as_ints(tmp_path):
    data = realistic((2000, 4))
    kwargs = {"max_workers": np.int64(2), "max_inflight_bytes": np.int64(1 << 20), "gpu_streams": np.int32(2)}
    with NWBParallelZarrIO(str(tmp_path / "n.nwb.zarr"), mode="w", engine="threads", **kwargs) as io:
        assert all(type(getattr(io.write_options, name)) is int for name in kwargs)
        io.write(nwbfile_with(NumpyIterator(data, buffer_shape=(500, 4))))
    with NWBParallelZarrIO(str(tmp_path / "n.nwb.zarr"), mode="r") as io:
        np.testing.assert_array_equal(io.read().acquisition["x"].data[:], data)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_workers": True}, TypeError, "max_workers must be an int, got bool"),
        ({"max_workers": np.bool_(True)}, TypeError, "max_workers must be an int"),
        ({"max_inflight_bytes": np.int64(0)}, ValueError, "max_inflight_bytes must be >= 1, got 0"),
        ({"read_timeout": "soon"}, TypeError, "read_timeout must be a number of seconds or None"),
        ({"read_timeout": True}, TypeError, "read_timeout must be a number of seconds"),
        ({"read_timeout": 0}, ValueError, "read_timeout must be a positive, finite number"),
        ({"read_timeout": -1.5}, ValueError, "read_timeout must be a positive"),
        ({"read_timeout": float("nan")}, ValueError, "read_timeout must be a positive, finite"),
        ({"read_timeout": float("inf")}, ValueError, "read_timeout must be a positive, finite"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kwargs, error, match):
    path = tmp_path / "never.nwb.zarr"
    with pytest.raises(error, match=match):
        NWBParallelZarrIO(str(path), mode="w", **kwargs)
    assert not path.exists()


def test_read_timeout_accepts_any_real_number_of_seconds():
    assert WriteOptions(read_timeout=np.float32(0.5)).read_timeout == 0.5
    assert WriteOptions(read_timeout=3).read_timeout == 3.0
    assert WriteOptions().read_timeout is None


def test_an_absurd_thread_count_is_capped_and_threads_start_only_for_tasks(two_cores, store, caplog):
    caplog.set_level(logging.WARNING, logger="hdmf_zarr_parallel")
    engine = ThreadEngine(10**6)
    assert engine.max_workers == 2 * engine_base.MAX_THREADS_PER_CORE
    assert f"max_workers=1000000: using {engine.max_workers} threads instead" in caplog.text

    class Recording(NumpyIterator):
        threads: set = set()

        def _get_data(self, selection):
            self.threads.add(threading.current_thread().name)
            return super()._get_data(selection)

    data = realistic((48_000, 32))  # 3 MB, 320 chunks
    array = make_array(store, data.shape, data.dtype, (150, 32))
    iterator = Recording(data, buffer_shape=data.shape, chunk_shape=(150, 32))
    pipeline_write([(array, iterator)], max_workers=10**6)
    np.testing.assert_array_equal(array[...], data)
    assert 1 <= len(Recording.threads) <= 2 * engine_base.MAX_THREADS_PER_CORE


def test_processes_are_capped_at_the_cpu_count(two_cores, caplog):
    caplog.set_level(logging.WARNING, logger="hdmf_zarr_parallel")
    engine = ProcessEngine(48)
    assert engine.max_workers == 2
    assert "max_workers=48: using 2 worker processes instead (one per CPU core)" in caplog.text
    assert engine._threads.max_workers == 48  # datasets processes cannot write still get the threads asked for
    assert ProcessEngine(2).max_workers == 2


@pytest.mark.parametrize("shards", [None, (400, 2)])
def test_a_chunk_larger_than_max_inflight_bytes_is_refused_before_the_file_is_written(tmp_path, shards):
    from hdmf_zarr.utils import ZarrDataIO

    path = tmp_path / "tiny.nwb.zarr"
    data = realistic((4000, 2))
    iterator = NumpyIterator(data, buffer_shape=(400, 2), chunk_shape=(100, 2))
    wrapped = iterator if shards is None else ZarrDataIO(iterator, chunks=[100, 2], shards=list(shards))
    unit = (
        "chunk of shape (100, 2) needs at least 400"
        if shards is None
        else "shard of shape (400, 2) needs at least 1600"
    )
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_inflight_bytes=1) as io:
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"dataset 'acquisition/x/data': one {unit} bytes in flight, more than max_inflight_bytes=1"
            ),
        ):
            io.write(nwbfile_with(wrapped))
    assert sorted(p.name for p in path.iterdir()) == ["zarr.json"]  # the root group the IO made, nothing more
    assert zarr.open_group(str(path), mode="r").attrs.asdict() == {}


def test_the_early_check_never_refuses_what_the_pipeline_accepts(tmp_path):
    data = realistic((4000, 2))  # int16: a (100, 2) chunk is 400 bytes
    with NWBParallelZarrIO(str(tmp_path / "ok.nwb.zarr"), mode="w", engine="threads", max_inflight_bytes=400) as io:
        io.write(nwbfile_with(NumpyIterator(data, buffer_shape=(100, 2), chunk_shape=(100, 2))))
    with NWBParallelZarrIO(str(tmp_path / "ok.nwb.zarr"), mode="r") as io:
        np.testing.assert_array_equal(io.read().acquisition["x"].data[:], data)
