"""``last_write_report`` says, per dataset, which engine wrote it and why, with bytes, seconds and MB/s."""

import numpy as np
import pytest
from hdmf.data_utils import DataChunkIterator
from pynwb import TimeSeries
from pynwb.testing.mock.file import mock_NWBFile

from conftest import NumpyIterator, realistic
from hdmf_zarr_parallel import NWBParallelZarrIO

A = realistic((20000, 4), seed=1)
B = realistic((9000, 6), seed=2)


class Unpicklable(NumpyIterator):
    """A random-access iterator that cannot travel to worker processes (like neuroconv's)."""

    def __reduce__(self):
        raise TypeError("holds an open file handle")


def write(path, engine, **series):
    nwbfile = mock_NWBFile()
    for name, data in series.items():
        nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=1.0))
    with NWBParallelZarrIO(str(path), mode="w", engine=engine, max_workers=2) as io:
        io.write(nwbfile)
        return io.last_write_report


def test_each_dataset_has_a_line_with_its_engine_bytes_and_speed(tmp_path):
    report = write(
        tmp_path / "f.nwb.zarr",
        "threads",
        a=NumpyIterator(A, buffer_shape=(2000, 4)),
        b=DataChunkIterator(B, buffer_size=1000),
    )
    by_name = {d.name: d for d in report.per_dataset}
    assert set(by_name) == {"acquisition/a/data", "acquisition/b/data"}
    assert by_name["acquisition/a/data"].bytes_written == A.nbytes
    assert by_name["acquisition/b/data"].bytes_written == B.nbytes
    for d in report.per_dataset:
        assert d.engine.startswith("threads") and d.reason == ""
        assert d.seconds > 0 and d.mbps == pytest.approx(d.bytes_written / d.seconds / 1e6)
    assert report.engine.startswith("threads")
    assert "acquisition/a/data: threads" in report.summary()


def test_a_fallback_is_named_in_the_report_not_hidden_behind_the_engine_asked_for(tmp_path):
    with pytest.warns(RuntimeWarning, match="written by threads instead of processes"):
        report = write(tmp_path / "f.nwb.zarr", "processes", a=Unpicklable(A, buffer_shape=(2000, 4)))
    (only,) = report.per_dataset
    assert only.engine.startswith("threads")
    assert "threads instead of processes" in only.reason and "pickled" in only.reason
    assert not report.engine.startswith("processes")  # it used to say 'processes (2 workers)'
    assert report.engine.startswith("threads")
    assert "threads instead of processes" in report.summary()


def test_datasets_that_took_different_routes_are_all_named(tmp_path):
    with pytest.warns(RuntimeWarning):
        report = write(
            tmp_path / "f.nwb.zarr",
            "processes",
            a=Unpicklable(A, buffer_shape=(2000, 4)),
            b=NumpyIterator(B, buffer_shape=(3000, 6)),
        )
    engines = {d.name: d.engine for d in report.per_dataset}
    assert engines["acquisition/a/data"].startswith("threads")
    assert engines["acquisition/b/data"].startswith("processes")
    assert "processes" in report.engine and "threads" in report.engine
    np.testing.assert_equal(sum(d.bytes_written for d in report.per_dataset), A.nbytes + B.nbytes)


def test_a_write_of_several_routes_names_each_with_its_datasets():
    from hdmf_zarr_parallel.write.report import DatasetTally, engines_used

    tallies = [DatasetTally("a", "gpu: 4 lanes + 1 CPU worker", ""), DatasetTally("b", "gpu: 1 CPU worker", "")]
    tallies.append(DatasetTally("c", "gpu: 4 lanes + 1 CPU worker", ""))
    assert engines_used("gpu: 4 lanes + 1 CPU worker", tallies[:1]) == "gpu: 4 lanes + 1 CPU worker"
    assert (
        engines_used("gpu (4 streams)", tallies)
        == "gpu: 1 CPU worker (1 dataset); gpu: 4 lanes + 1 CPU worker (2 datasets)"
    )
