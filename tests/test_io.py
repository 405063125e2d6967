"""ParallelZarrIO / NWBParallelZarrIO: hdmf-zarr integration, read back with stock hdmf-zarr and PyNWB,
and the datasets we write with two independent Zarr v3 readers (tensorstore, zarrs: ``readers.py``)."""

import inspect
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hdmf.data_utils import DataChunkIterator
from hdmf_zarr import ZarrDataIO, ZarrIO
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import TimeSeries
from pynwb.testing.mock.file import mock_NWBFile

import hdmf_zarr_parallel.write.queue as queue_module
from conftest import NumpyIterator, realistic
from hdmf_zarr_parallel import ChunkWriteError, NWBParallelZarrIO, ParallelZarrIO
from hdmf_zarr_parallel.write.queue import ParallelDataChunkIteratorQueue
from readers import assert_independent_readers_match


def nwbfile_with(**series):
    nwbfile = mock_NWBFile()
    for name, data in series.items():
        nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=30_000.0))
    return nwbfile


def read_series(path, name):
    with NWBZarrIO(str(path), mode="r") as io:
        return io.read().acquisition[name].data[:]


def assert_series_read_independently(subtests, path, name, expected):
    """tensorstore and zarrs read the series' data array, inside the NWB groups, bit-exactly."""
    assert_independent_readers_match(Path(path) / "acquisition" / name / "data", expected, subtests, name=name)


class Unpicklable(NumpyIterator):
    def __reduce__(self):
        raise TypeError("holds an open file handle")


def test_upstream_still_assigns_the_private_queue_attribute():
    """Our integration point: if hdmf-zarr renames this, the parallel queue would silently not be used."""
    import ast

    import hdmf_zarr.backend

    tree = ast.parse(inspect.getsource(hdmf_zarr.backend))
    zarr_io = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ZarrIO")
    assigning = {
        f.name
        for f in zarr_io.body
        if isinstance(f, ast.FunctionDef)
        for node in ast.walk(f)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute) and target.attr == "__dci_queue"
    }
    assert {"__init__", "write", "export", "write_dataset"} <= assigning


def test_nwb_write_reads_back_exactly_with_stock_hdmf_zarr(tmp_path, subtests):
    ephys = realistic((30_011, 24))
    lfp = realistic((2_003, 8), "float32", seed=3)
    path = tmp_path / "session.nwb.zarr"
    nwbfile = nwbfile_with(
        ephys=ZarrDataIO(NumpyIterator(ephys, buffer_shape=(4000, 24)), chunks=(1500, 16)),
        lfp=DataChunkIterator(lfp, buffer_size=300),
    )
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_workers=3) as io:
        io.write(nwbfile)
        report = io.last_write_report
    assert report.datasets == 2 and report.bytes_written == ephys.nbytes + lfp.nbytes
    np.testing.assert_array_equal(read_series(path, "ephys"), ephys)
    np.testing.assert_array_equal(read_series(path, "lfp"), lfp)
    assert zarr.open_array(path / "acquisition" / "ephys" / "data").chunks == (1500, 16)
    assert_series_read_independently(subtests, path, "ephys", ephys)
    assert_series_read_independently(subtests, path, "lfp", lfp)


def test_all_datasets_are_written_in_one_concurrent_pass_by_default(tmp_path, monkeypatch, subtests):
    runs = []
    real_finish = queue_module.PipelineRun.finish

    def finish(self):
        runs.append(self.datasets)
        return real_finish(self)

    monkeypatch.setattr(queue_module.PipelineRun, "finish", finish)
    series = {f"s{i}": NumpyIterator(realistic((500, 4), seed=i), buffer_shape=(100, 4)) for i in range(3)}
    with NWBParallelZarrIO(str(tmp_path / "a.nwb.zarr"), mode="w", engine="threads") as io:
        io.write(nwbfile_with(**series))
    assert runs == [3]
    runs.clear()
    series = {f"s{i}": NumpyIterator(realistic((500, 4), seed=i), buffer_shape=(100, 4)) for i in range(3)}
    with NWBParallelZarrIO(str(tmp_path / "b.nwb.zarr"), mode="w", engine="threads") as io:
        io.write(nwbfile_with(**series), exhaust_dci=True)  # explicit: one dataset at a time, as asked
    assert runs == [1, 1, 1]
    for i in range(3):
        np.testing.assert_array_equal(read_series(tmp_path / "b.nwb.zarr", f"s{i}"), realistic((500, 4), seed=i))
        assert_series_read_independently(subtests, tmp_path / "b.nwb.zarr", f"s{i}", realistic((500, 4), seed=i))


class SignallingIterator(NumpyIterator):
    """Sets an event when its data is first read."""

    def __init__(self, array, started, **kwargs):
        self.started = started
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        self.started.set()
        return super()._get_data(selection)


def test_datasets_start_writing_while_hdmf_zarr_is_still_writing_the_file(tmp_path, monkeypatch, subtests):
    """The first dataset's data is being read before hdmf-zarr has even queued the second one."""
    import threading

    started = threading.Event()
    seen_before_second = []
    real_append = ParallelDataChunkIteratorQueue.append

    def append(self, dataset, data):
        if isinstance(data, NumpyIterator) and not isinstance(data, SignallingIterator):
            seen_before_second.append(started.wait(timeout=20))
        return real_append(self, dataset, data)

    monkeypatch.setattr(ParallelDataChunkIteratorQueue, "append", append)
    first = realistic((5000, 4), seed=1)
    second = realistic((700, 3), seed=2)
    nwbfile = nwbfile_with(
        a_first=SignallingIterator(first, started, buffer_shape=(1000, 4)),
        b_second=NumpyIterator(second, buffer_shape=(100, 3)),
    )
    with NWBParallelZarrIO(str(tmp_path / "o.nwb.zarr"), mode="w", engine="threads") as io:
        io.write(nwbfile)
    assert seen_before_second == [True]
    np.testing.assert_array_equal(read_series(tmp_path / "o.nwb.zarr", "a_first"), first)
    np.testing.assert_array_equal(read_series(tmp_path / "o.nwb.zarr", "b_second"), second)
    assert_series_read_independently(subtests, tmp_path / "o.nwb.zarr", "a_first", first)
    assert_series_read_independently(subtests, tmp_path / "o.nwb.zarr", "b_second", second)


class ReadsLastAfterTheSpecCache(NumpyIterator):
    """Reads its last region only once hdmf-zarr has cached the spec (gives up after 20 s),
    then fails there if asked to."""

    def __init__(self, array, spec_dir, fail=False, **kwargs):
        self.spec_dir, self.fail, self.read_after_spec_cache = spec_dir, fail, None
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        if selection[0].stop == self.array.shape[0]:
            deadline = time.monotonic() + 20
            while not (self.spec_dir / "zarr.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.read_after_spec_cache = (self.spec_dir / "zarr.json").exists()
            if self.fail:
                raise OSError("disk on fire")
        return super()._get_data(selection)


def test_data_keeps_being_written_while_hdmf_zarr_caches_the_spec(tmp_path, subtests):
    """Stock waits for all data before its single-threaded tail (spec cache, consolidation); ours
    overlaps them, then waits, and re-raises a failure of the data written meanwhile."""
    data = realistic((6000, 4), seed=7)
    path = tmp_path / "t.nwb.zarr"
    iterator = ReadsLastAfterTheSpecCache(data, path / "specifications", buffer_shape=(1000, 4))
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_workers=2) as io:
        io.write(nwbfile_with(x=iterator))
        assert io.last_write_report.bytes_written == data.nbytes
    assert iterator.read_after_spec_cache is True
    np.testing.assert_array_equal(read_series(path, "x"), data)
    assert zarr.open_consolidated(str(path)).metadata.consolidated_metadata is not None
    assert_series_read_independently(subtests, path, "x", data)

    failing = ReadsLastAfterTheSpecCache(
        data, tmp_path / "f.nwb.zarr" / "specifications", fail=True, buffer_shape=(1000, 4)
    )
    with NWBParallelZarrIO(str(tmp_path / "f.nwb.zarr"), mode="w", engine="threads", max_workers=2) as io:
        with pytest.raises(ChunkWriteError, match="disk on fire"):
            io.write(nwbfile_with(x=failing))
    assert failing.read_after_spec_cache is True
    assert not [t for t in threading.enumerate() if t.name.startswith("hzp-")]


def test_a_failure_in_hdmf_zarr_itself_stops_the_datasets_already_writing(tmp_path, monkeypatch):
    import threading

    from hdmf_zarr import ZarrIO as StockZarrIO

    real_write_attributes = StockZarrIO.write_attributes

    def write_attributes(self, *args, **kwargs):
        obj = args[0] if args else kwargs.get("obj")
        if getattr(obj, "path", "").endswith("x/data"):  # just after x was queued and started writing
            raise RuntimeError("attribute writing broke")
        return real_write_attributes(self, *args, **kwargs)

    data = realistic((200_000, 8))
    monkeypatch.setattr(StockZarrIO, "write_attributes", write_attributes)
    with NWBParallelZarrIO(str(tmp_path / "f.nwb.zarr"), mode="w", engine="threads", max_inflight_bytes=1 << 20) as io:
        with pytest.raises(RuntimeError, match="attribute writing broke"):
            io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(1000, 8))))
    chunks = list((tmp_path / "f.nwb.zarr" / "acquisition" / "x" / "data").rglob("c/*/*"))
    assert len(chunks) < 200_000 // 1000  # stopped, not written to the end
    assert not [t for t in threading.enumerate() if t.name.startswith("hzp-")]


def test_number_of_jobs_selects_worker_processes(tmp_path, subtests):
    data = realistic((5000, 6))
    with NWBParallelZarrIO(str(tmp_path / "p.nwb.zarr"), mode="w") as io:
        io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(1000, 6))), number_of_jobs=2)
        assert io.last_write_report.engine == "processes (2 workers)"
    np.testing.assert_array_equal(read_series(tmp_path / "p.nwb.zarr", "x"), data)
    assert_series_read_independently(subtests, tmp_path / "p.nwb.zarr", "x", data)


def test_unpicklable_iterator_with_processes_warns_and_falls_back_to_threads(tmp_path, subtests):
    data = realistic((3000, 6))
    with NWBParallelZarrIO(str(tmp_path / "u.nwb.zarr"), mode="w", engine="processes", max_workers=2) as io:
        with pytest.warns(
            RuntimeWarning, match=r"dataset 'acquisition/x/data' is written by threads.*cannot be pickled"
        ):
            io.write(nwbfile_with(x=Unpicklable(data, buffer_shape=(500, 6))))
    np.testing.assert_array_equal(read_series(tmp_path / "u.nwb.zarr", "x"), data)
    assert_series_read_independently(subtests, tmp_path / "u.nwb.zarr", "x", data)


def test_generator_of_unknown_length_grows_the_dataset(tmp_path, subtests):
    rows = [realistic((1, 5), "float64", seed=i)[0] for i in range(1234)]
    with NWBParallelZarrIO(str(tmp_path / "g.nwb.zarr"), mode="w", engine="threads") as io:
        io.write(nwbfile_with(g=DataChunkIterator(data=iter(rows), buffer_size=100)))
    np.testing.assert_array_equal(read_series(tmp_path / "g.nwb.zarr", "g"), np.array(rows))
    assert_series_read_independently(subtests, tmp_path / "g.nwb.zarr", "g", np.array(rows))  # the grown shape


def test_string_iterators_take_hdmf_zarrs_own_path(tmp_path):
    from hdmf.common import DynamicTable, VectorData

    words = [f"word{i}" for i in range(250)]
    table = DynamicTable(
        name="t",
        description="d",
        columns=[VectorData(name="w", description="d", data=DataChunkIterator(words, buffer_size=7))],
        id=list(range(len(words))),
    )
    from hdmf.common import get_manager

    path = str(tmp_path / "s.zarr")
    with ParallelZarrIO(path, mode="w", manager=get_manager(), engine="threads") as io:
        io.write(table)
    with ZarrIO(path, mode="r", manager=get_manager()) as io:
        assert list(io.read()["w"].data[:]) == words


@pytest.mark.parametrize("store_kind", ["str", "Path", "LocalStore", "MemoryStore", "ZipStore"])
@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # zip files append rewritten zarr.json keys
def test_every_store_hdmf_zarr_accepts(tmp_path, subtests, store_kind):
    data = realistic((2000, 3))
    target = {
        "str": str(tmp_path / "a.nwb.zarr"),
        "Path": tmp_path / "a.nwb.zarr",
        "LocalStore": zarr.storage.LocalStore(tmp_path / "a.nwb.zarr"),
        "MemoryStore": zarr.storage.MemoryStore(),
        "ZipStore": zarr.storage.ZipStore(tmp_path / "a.nwb.zarr.zip", mode="w"),
    }[store_kind]
    with NWBParallelZarrIO(target, mode="w", engine="threads") as io:
        io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(300, 3))))
    if store_kind == "ZipStore":  # a zip file is read once it is closed
        target.close()
        target = zarr.storage.ZipStore(tmp_path / "a.nwb.zarr.zip", mode="r")
    with NWBZarrIO(target, mode="r") as io:
        np.testing.assert_array_equal(io.read().acquisition["x"].data[:], data)
    if store_kind in ("str", "Path", "LocalStore"):  # a folder: the independent readers read it in place
        assert_series_read_independently(subtests, tmp_path / "a.nwb.zarr", "x", data)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"engine": "warp"}, ValueError, "unknown engine 'warp'"),
        ({"engine": 3}, TypeError, "engine must be a string"),
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1"),
        ({"max_workers": 2.5}, TypeError, "max_workers must be an int"),
        ({"max_inflight_bytes": -1}, ValueError, "max_inflight_bytes must be >= 1"),
        ({"progress": "yes"}, TypeError, "progress must be a bool"),
        ({"engine": "dask"}, ValueError, r"engine='dask' needs a distributed.Client: pass client=.*no current"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kwargs, error, match):
    path = tmp_path / "never.nwb.zarr"
    with pytest.raises(error, match=match):
        NWBParallelZarrIO(str(path), mode="w", **kwargs)
    assert not path.exists()


def test_bad_number_of_jobs_fails_before_data_moves(tmp_path):
    with NWBParallelZarrIO(str(tmp_path / "j.nwb.zarr"), mode="w") as io:
        with pytest.raises(ValueError, match="number_of_jobs must be >= 1"):
            io.write(nwbfile_with(x=NumpyIterator(realistic((100, 2)), buffer_shape=(10, 2))), number_of_jobs=0)


def test_queue_is_ours_and_auto_logs_its_choice(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hdmf_zarr_parallel")
    with NWBParallelZarrIO(str(tmp_path / "q.nwb.zarr"), mode="w") as io:
        io.write(nwbfile_with(x=NumpyIterator(realistic((100, 2)), buffer_shape=(10, 2))))
        assert isinstance(io._ZarrIO__dci_queue, ParallelDataChunkIteratorQueue)
    assert "engine='auto' chose CPU thread pool" in caplog.text


def test_progress_bar_counts_every_byte(tmp_path, capsys):
    data = realistic((4000, 10))
    with NWBParallelZarrIO(str(tmp_path / "b.nwb.zarr"), mode="w", engine="threads", progress={"mininterval": 0}) as io:
        io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(500, 10))))
    err = capsys.readouterr().err
    assert "78.1k/78.1k" in err and "B/s" in err


def test_export_from_hdf5_is_parallel_and_exact(tmp_path, subtests):
    from pynwb import NWBHDF5IO

    data = realistic((3000, 4))
    h5 = tmp_path / "in.nwb"
    with NWBHDF5IO(str(h5), mode="w") as io:
        io.write(nwbfile_with(x=data))
    with NWBHDF5IO(str(h5), mode="r") as src, NWBParallelZarrIO(str(tmp_path / "out.nwb.zarr"), mode="w") as dst:
        dst.export(src_io=src, write_args={"link_data": False})
    np.testing.assert_array_equal(read_series(tmp_path / "out.nwb.zarr", "x"), data)
    assert_series_read_independently(subtests, tmp_path / "out.nwb.zarr", "x", data)


def test_processes_engine_keeps_an_iterator_that_holds_its_data_in_this_process(tmp_path, subtests):
    data = realistic((1_200_000, 8))  # ~19 MiB inside the iterator: too big to ship with every task
    with NWBParallelZarrIO(str(tmp_path / "big.nwb.zarr"), mode="w", engine="processes", max_workers=2) as io:
        with pytest.warns(RuntimeWarning, match=r"pickles to 18 MiB \(its iterator holds its data\)"):
            io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(200_000, 8))))
    np.testing.assert_array_equal(read_series(tmp_path / "big.nwb.zarr", "x"), data)
    assert_series_read_independently(subtests, tmp_path / "big.nwb.zarr", "x", data)
