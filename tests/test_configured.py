"""``NWBParallelZarrIO.configured(...)``: an IO class with preset write options, for callers that take a class."""

import numpy as np
import pytest
from hdmf.data_utils import DataChunkIterator
from hdmf_zarr import NWBZarrIO
from pynwb import TimeSeries
from pynwb.testing.mock.file import mock_NWBFile

from conftest import realistic
from hdmf_zarr_parallel import NWBParallelZarrIO, ParallelZarrIO

DATA = realistic((6000, 4), seed=3)


def nwbfile_with(name: str, data) -> object:
    nwbfile = mock_NWBFile()
    nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=10.0))
    return nwbfile


def test_a_configured_class_is_a_real_subclass_with_its_options():
    configured = NWBParallelZarrIO.configured(engine="serial", max_inflight_bytes=1 << 24)
    assert issubclass(configured, NWBParallelZarrIO) and issubclass(configured, NWBZarrIO)
    assert configured.__name__ == "NWBParallelZarrIO"
    assert configured.preset_options == {"engine": "serial", "max_inflight_bytes": 1 << 24}
    assert "engine='serial'" in configured.__doc__


def test_write_read_and_append_use_the_presets(tmp_path):
    configured = NWBParallelZarrIO.configured(engine="threads", max_workers=2)
    path = str(tmp_path / "f.nwb.zarr")
    with configured(path, mode="w") as io:
        assert io.write_options.engine == "threads" and io.write_options.max_workers == 2
        io.write(nwbfile_with("x", DataChunkIterator(DATA, buffer_size=500)))
        assert io.last_write_report.engine.startswith("threads")
    assert configured.can_read(path)
    with configured(path, mode="a") as io:
        nwbfile = io.read()
        nwbfile.add_acquisition(TimeSeries(name="y", data=DATA[:100] * 2, unit="V", rate=10.0))
        io.write(nwbfile)
    with NWBZarrIO(path, mode="r") as io:  # stock reads what the configured class wrote
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.acquisition["x"].data[:], DATA)
        np.testing.assert_array_equal(nwbfile.acquisition["y"].data[:], DATA[:100] * 2)


def test_keywords_given_when_an_object_is_made_win_and_presets_chain(tmp_path):
    configured = ParallelZarrIO.configured(engine="threads", max_workers=2).configured(max_workers=3)
    assert configured.preset_options == {"engine": "threads", "max_workers": 3}
    with configured(str(tmp_path / "a.zarr"), mode="w", engine="serial") as io:
        assert io.write_options.engine == "serial" and io.write_options.max_workers == 3


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"engnie": "threads"}, TypeError, "unknown write option"),
        ({"engine": "warp"}, ValueError, "unknown engine"),
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"mode": "w"}, TypeError, "unknown write option"),
    ],
)
def test_bad_presets_fail_when_the_class_is_made(options, error, match):
    with pytest.raises(error, match=match):
        NWBParallelZarrIO.configured(**options)
