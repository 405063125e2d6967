"""The engine registry, the one store-reachability rule, and routes (engines keep no per-dataset tables)."""

import inspect
import pickle

import numpy as np
import pytest
import zarr

from conftest import NumpyIterator, make_array, realistic
from hdmf_zarr_parallel import NWBParallelZarrIO, WriteOptions
from hdmf_zarr_parallel.engines import ENGINE_NAMES, ENGINES, make_engine
from hdmf_zarr_parallel.engines.processes import ProcessEngine, process_ineligibility
from hdmf_zarr_parallel.engines.reach import unreachable_reason
from hdmf_zarr_parallel.engines.serial import SerialEngine
from hdmf_zarr_parallel.engines.threads import ThreadEngine
from hdmf_zarr_parallel.options import ENGINES as OPTION_ENGINES
from hdmf_zarr_parallel.write.dataset import DatasetWrite


# -- the registry ----------------------------------------------------------------------------------
def test_options_and_the_command_line_take_their_engine_names_from_the_registry():
    assert OPTION_ENGINES == ENGINE_NAMES == tuple(ENGINES) == ("auto", "threads", "processes", "serial", "gpu", "dask")
    assert all(entry.summary and entry.name == name for name, entry in ENGINES.items())
    for name in ENGINE_NAMES:
        assert WriteOptions(engine=name).engine == name
    with pytest.raises(ValueError, match="unknown engine 'warp'; choose one of auto, threads, processes, serial"):
        WriteOptions(engine="warp")


@pytest.mark.parametrize(
    ("name", "kind"), [("serial", SerialEngine), ("threads", ThreadEngine), ("processes", ProcessEngine)]
)
def test_each_cpu_name_makes_its_engine(name, kind):
    engine = make_engine(WriteOptions(engine=name, max_workers=2))
    assert type(engine) is kind
    engine.shutdown()


def test_the_io_keywords_are_the_write_options_fields(tmp_path):
    keywords = [
        p.name for p in inspect.signature(NWBParallelZarrIO.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
    ]
    assert keywords == list(WriteOptions.keywords())
    assert "mp_context" not in keywords and "max_threads_per_process" not in keywords  # hdmf-zarr's write() sets them
    with NWBParallelZarrIO(str(tmp_path / "k.nwb.zarr"), mode="w", engine="serial", gpu_streams=2) as io:
        assert io.write_options == WriteOptions(engine="serial", gpu_streams=2)
    with pytest.raises(TypeError, match="unrecognized argument: 'bogus'"):
        NWBParallelZarrIO(str(tmp_path / "never.nwb.zarr"), mode="w", bogus=1)
    assert not (tmp_path / "never.nwb.zarr").exists()


# -- can another process reach this store? --------------------------------------------------------
def test_the_reach_rule(tmp_path):
    assert unreachable_reason(zarr.storage.LocalStore(tmp_path / "a.zarr")) is None
    assert "MemoryStore" in unreachable_reason(zarr.storage.MemoryStore())
    assert "ZipStore" in unreachable_reason(zarr.storage.ZipStore(tmp_path / "a.zip", mode="w"))
    memory = zarr.storage.FsspecStore.from_url("memory://hzp-reach.zarr")
    assert "memory://" in unreachable_reason(memory)
    assert unreachable_reason(zarr.storage.FsspecStore.from_url(f"file://{tmp_path}/f.zarr")) is None


def test_processes_write_an_fsspec_url(tmp_path):
    """The one rule: what Dask workers can reach, worker processes can too."""
    data = realistic((400, 4))
    store = zarr.storage.FsspecStore.from_url(f"file://{tmp_path}/f.zarr", storage_options={"auto_mkdir": True})
    array = make_array(store, data.shape, data.dtype, (50, 4))
    dataset = DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 4)))
    assert process_ineligibility(dataset) is None
    engine = ProcessEngine(1)
    try:
        route = engine.admit(dataset)
        assert route.engine is engine
        assert route.submit_region((slice(0, 100), slice(0, 4))).result() == 100 * 4 * 2
    finally:
        engine.shutdown()
    np.testing.assert_array_equal(zarr.open_array(f"{tmp_path}/f.zarr", mode="r")[:100], data[:100])


def test_processes_and_dask_use_the_same_rule(tmp_path):
    data = realistic((100, 4))
    zipped = make_array(zarr.storage.ZipStore(tmp_path / "z.zip", mode="w"), data.shape, data.dtype, (10, 4))
    writer = DatasetWrite(zipped, NumpyIterator(data, buffer_shape=(50, 4)))
    assert process_ineligibility(writer) == unreachable_reason(zipped.store)


# -- routes ----------------------------------------------------------------------------------------
def test_a_dataset_processes_cannot_take_is_routed_to_the_shared_thread_engine():
    data = realistic((400, 4))
    array = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (50, 4))
    engine = ProcessEngine(2)
    try:
        with pytest.warns(RuntimeWarning, match="written by threads instead of processes: its store \\(MemoryStore\\)"):
            route = engine.admit(DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 4))))
        assert route.engine is engine._threads and engine._pool is None  # no process started for it
        assert route.submit_region((slice(0, 100), slice(0, 4))).result() == 100 * 4 * 2
    finally:
        engine.shutdown()
    np.testing.assert_array_equal(zarr.open_array(array.store, mode="r")[:100], data[:100])


def test_the_processes_route_carries_the_pickled_dataset(tmp_path):
    data = realistic((400, 4))
    array = make_array(zarr.storage.LocalStore(tmp_path / "p.zarr"), data.shape, data.dtype, (50, 4))
    engine = ProcessEngine(1)
    try:
        first = engine.admit(DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 4))))
        second = engine.admit(DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 4))))
        assert first.engine is engine and first.token != second.token
        assert pickle.loads(first.payload).name == first.dataset.name
    finally:
        engine.shutdown()
