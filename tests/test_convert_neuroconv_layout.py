"""``convert`` of an NWB HDF5 file laid out as neuroconv writes one: the route neuroconv users take to Zarr v3.

neuroconv (in its own environment: it cannot share one with zarr 3) writes NWB HDF5 with
~10 MB chunks of 64 channels, gzip, and shuffle + gzip timestamps, next to electrodes and
units tables. The file is built here with pynwb's ``H5DataIO`` in that layout; the output
must equal stock hdmf-zarr's export and keep the layout (chunks, gzip → ``numcodecs.zlib``,
shuffle + gzip → ``numcodecs.shuffle`` + ``numcodecs.zlib``).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from datetime import UTC, datetime

import numpy as np
import pytest
import zarr
from hdmf.backends.hdf5 import H5DataIO
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries

from conftest import realistic
from hdmf_zarr_parallel.tools.convert import ConvertOptions, convert
from hdmf_zarr_parallel.tools.verify import compare_nwb_files, compare_zarr_stores

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

CHANNELS = 64
FRAMES = 100_000
CHUNK_FRAMES = int(10e6 / (2 * CHANNELS))  # neuroconv's chunk_mb=10 for int16, 64 channels per chunk


def neuroconv_like_hdf5(path):
    nwbfile = NWBFile("neuroconv layout", "s1", datetime(2026, 12, 1, tzinfo=UTC))
    device = nwbfile.create_device("probe")
    group = nwbfile.create_electrode_group("shank0", "", "CA1", device)
    for i in range(CHANNELS):
        nwbfile.add_electrode(group=group, location="CA1", x=0.0, y=float(i) * 20, z=0.0)
    region = nwbfile.create_electrode_table_region(list(range(CHANNELS)), "all")
    data = H5DataIO(realistic((FRAMES, CHANNELS), seed=8), chunks=(CHUNK_FRAMES, CHANNELS), compression="gzip")
    timestamps = H5DataIO(np.arange(FRAMES) / 30_000.0 + 12.5, chunks=(FRAMES // 2,), compression="gzip", shuffle=True)
    series = ElectricalSeries(name="ElectricalSeries", data=data, electrodes=region, timestamps=timestamps)
    nwbfile.add_acquisition(series)
    rng = np.random.default_rng(1)
    for unit in range(12):
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0, FRAMES / 30_000.0, 40 + unit)), electrodes=[unit])
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return neuroconv_like_hdf5(tmp_path_factory.mktemp("nc") / "neuroconv.nwb")


def test_convert_of_a_neuroconv_layout_equals_stock_export_and_keeps_the_layout(source, tmp_path):
    stock = tmp_path / "stock.nwb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(source), mode="r") as src_io, NWBZarrIO(str(stock), mode="w") as io:
            io.export(src_io=src_io, write_args={"link_data": False})
    ours = tmp_path / "ours.nwb.zarr"
    report = convert(source, ours, ConvertOptions(engine="threads", workers=2, verify=True))
    assert report.verified
    assert "/acquisition/ElectricalSeries/data" in {name for name, _ in report.streamed}
    assert compare_zarr_stores(stock, ours) == []
    assert compare_nwb_files(source, ours) == []
    data = zarr.open_array(str(ours / "acquisition/ElectricalSeries/data"), mode="r")
    assert data.chunks == (CHUNK_FRAMES, CHANNELS)
    assert [c.to_dict()["name"] for c in data.compressors] == ["numcodecs.zlib"]
    timestamps = zarr.open_array(str(ours / "acquisition/ElectricalSeries/timestamps"), mode="r")
    names = [c.to_dict()["name"] for c in (*timestamps.filters, *timestamps.compressors)]
    assert names == ["numcodecs.shuffle", "numcodecs.zlib"]


def test_the_cli_converts_a_neuroconv_layout_to_zstd_and_verifies(source, tmp_path):
    out = tmp_path / "cli.nwb.zarr"
    done = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel", "convert", str(source), str(out), "--codec", "zstd", "--verify"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "verify" in done.stdout
    with NWBZarrIO(str(out), mode="r") as io:
        nwbfile = io.read()
        series = nwbfile.acquisition["ElectricalSeries"]
        np.testing.assert_array_equal(series.data[:], realistic((FRAMES, CHANNELS), seed=8))
        assert len(nwbfile.units) == 12 and len(nwbfile.electrodes) == CHANNELS
