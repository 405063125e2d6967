"""A write either completes or raises: one IO object runs one write at a time, and a pipeline
run that was aborted never reports success."""

import threading

import numpy as np
import pytest
import zarr
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import TimeSeries
from pynwb.testing.mock.file import mock_NWBFile

from conftest import NumpyIterator, make_array, realistic
from hdmf_zarr_parallel import NWBParallelZarrIO
from hdmf_zarr_parallel.engines import make_engine
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import PipelineRun


class Gated(NumpyIterator):
    """Signals when its first region is read, then waits for a gate before every region."""

    def __init__(self, array, started, gate, **kwargs):
        self.started, self.gate = started, gate
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        self.started.set()
        self.gate.wait(timeout=30)
        return super()._get_data(selection)


def nwbfile_with(**series):
    nwbfile = mock_NWBFile()
    for name, data in series.items():
        nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=30_000.0))
    return nwbfile


def test_one_io_object_refuses_a_second_concurrent_write(tmp_path):
    first, second = realistic((20_000, 4), seed=1), realistic((20_000, 4), seed=2)
    started, gate = threading.Event(), threading.Event()
    path = tmp_path / "t.nwb.zarr"
    outcome = {}
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_workers=2) as io:

        def write_first():
            try:
                io.write(nwbfile_with(x=Gated(first, started, gate, buffer_shape=(1000, 4))))
                outcome["first"] = "ok"
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["first"] = exc

        thread = threading.Thread(target=write_first)
        thread.start()
        assert started.wait(timeout=30)
        try:
            with pytest.raises(RuntimeError, match="already writing"):
                io.write(nwbfile_with(x=NumpyIterator(second, buffer_shape=(1000, 4))))
            with pytest.raises(RuntimeError, match="already writing"):
                io.export(src_io=io, write_args={"link_data": False})
        finally:
            gate.set()
            thread.join(timeout=60)
        assert outcome["first"] == "ok", outcome
        assert io.last_write_report.bytes_written == first.nbytes
    with NWBZarrIO(str(path), mode="r") as reader:
        np.testing.assert_array_equal(reader.read().acquisition["x"].data[:], first)


def test_pipeline_finish_after_abort_raises(tmp_path):
    data = realistic((50_000, 4))
    array = make_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), data.shape, data.dtype, (1000, 4))
    options = WriteOptions(engine="threads", max_workers=2)
    started, gate = threading.Event(), threading.Event()
    run = PipelineRun(make_engine(options), options)
    run.add(DatasetWrite(array, Gated(data, started, gate, buffer_shape=(1000, 4))))
    assert started.wait(timeout=30)
    threading.Timer(0.2, gate.set).start()  # abort() waits for the regions being read
    run.abort()
    with pytest.raises(RuntimeError, match="aborted"):
        run.finish()
    assert not [t for t in threading.enumerate() if t.name.startswith("hzp-")]
