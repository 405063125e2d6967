"""A write either completes or raises: a pipeline run that was aborted never reports success."""

import threading

import pytest
import zarr

from conftest import NumpyIterator, make_array, realistic
from hdmf_zarr_parallel.dataset import DatasetWriter
from hdmf_zarr_parallel.engines import make_engine
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.pipeline import PipelineRun


class Gated(NumpyIterator):
    """Signals when its first region is read, then waits for a gate before every region."""

    def __init__(self, array, started, gate, **kwargs):
        self.started, self.gate = started, gate
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        self.started.set()
        self.gate.wait(timeout=30)
        return super()._get_data(selection)


def test_pipeline_finish_after_abort_raises(tmp_path):
    data = realistic((50_000, 4))
    array = make_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), data.shape, data.dtype, (1000, 4))
    options = WriteOptions(engine="threads", max_workers=2)
    started, gate = threading.Event(), threading.Event()
    run = PipelineRun(make_engine(options), options)
    run.add(DatasetWriter(array, Gated(data, started, gate, buffer_shape=(1000, 4))))
    assert started.wait(timeout=30)
    threading.Timer(0.2, gate.set).start()  # abort() waits for the regions being read
    run.abort()
    with pytest.raises(RuntimeError, match="aborted"):
        run.finish()
    assert not [t for t in threading.enumerate() if t.name.startswith("hzp-")]
