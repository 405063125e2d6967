"""Write ``tests/data/ephys_v2.nwb.zarr``: a small NWB Zarr **v2** store, as neuroconv users have.

Not run by the test suite (the store is committed). It needs the last Zarr v2 stack, which cannot
share an environment with this project's zarr 3, so run it in a throwaway venv::

    PYENV_VERSION=3.12.1 python3.12 -m venv /tmp/v2env
    /tmp/v2env/bin/pip install "hdmf-zarr>=0.13,<0.14"   # pip resolved (2026-12):
    #   hdmf-zarr 0.13.0, zarr 2.18.7, numcodecs 0.15.2, hdmf 6.2.0, pynwb 4.2.0, numpy 2.5.5, h5py 3.16.0
    /tmp/v2env/bin/python tests/data/make_v2_fixture.py tests/data/ephys_v2.nwb.zarr

What it holds (each chosen for what a v2 → v3 conversion must carry over):

* an electrodes table (x/y/z floats, string columns, the ``group`` column of object references,
  which hdmf-zarr 0.13 stores with the *pickle* codec) and a device / electrode group;
* ``ElectricalSeries`` ``raw``: 24000 × 8 int16 samples (384 KB) in 4096 × 8 chunks (the last one
  partial), Blosc zstd + byte shuffle, ``rate``, ``conversion``, ``offset``, a region of the
  electrodes table;
* ``TimeSeries`` ``pressure``: 6000 float64 samples with explicit float64 timestamps, both GZip
  level 1 (a compressor, and a Delta filter on the timestamps);
* ``ImageSeries`` ``camera``: 10 × 32 × 32 uint8 frames, no compressor, ``rate``;
* a processing module with an LFP ``ElectricalSeries`` (float32, default Blosc lz4);
* a units table with ragged ``spike_times`` and a string column;
* string attributes everywhere (descriptions, comments, units, ``experimenter``, keywords).

The values are deterministic (seeded) so the store is the same on every run, bar the
``object_id``s, ``file_create_date`` and the cached specs of the installed pynwb.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import numcodecs
import numpy as np
from hdmf_zarr import NWBZarrIO
from hdmf_zarr.utils import ZarrDataIO
from pynwb import NWBFile, TimeSeries
from pynwb.ecephys import LFP, ElectricalSeries
from pynwb.file import Subject
from pynwb.image import ImageSeries


def build() -> NWBFile:
    rng = np.random.default_rng(20261201)
    nwbfile = NWBFile(
        session_description="v2 fixture: ephys, a pressure trace, a camera",
        identifier="hdmf-zarr-parallel-v2-fixture",
        session_start_time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        experimenter=["Ramón y Cajal, Santiago", "Golgi, Camillo"],
        lab="Parallel Lab",
        institution="Example University",
        experiment_description="A small NWB Zarr v2 store written with hdmf-zarr 0.13",
        session_id="v2-session-01",
        keywords=["ephys", "zarr v2", "fixture"],
        notes="Ünïcödé notes survive the conversion",
    )
    nwbfile.subject = Subject(subject_id="m-01", species="Mus musculus", sex="F", age="P60D")
    device = nwbfile.create_device(name="probe", description="a 8-channel probe", manufacturer="ACME")
    group = nwbfile.create_electrode_group(name="shank0", description="the only shank", location="CA1", device=device)
    nwbfile.add_electrode_column(name="label", description="channel label")
    for i in range(8):
        nwbfile.add_electrode(
            x=10.0 * i,
            y=0.0,
            z=-5.0 * i,
            imp=np.nan,
            filtering="none",
            group=group,
            location="CA1",
            label=f"ch{i:02d}",
        )
    region = nwbfile.create_electrode_table_region(region=list(range(8)), description="all channels")

    samples = 24000
    t = np.arange(samples) / 30000.0
    raw = (400 * np.sin(2 * np.pi * 7 * t)[:, None] + rng.normal(0, 30, (samples, 8))).astype(np.int16)
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="raw",
            data=ZarrDataIO(
                raw,
                chunks=(4096, 8),
                compressor=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
            ),
            electrodes=region,
            rate=30000.0,
            starting_time=0.5,
            conversion=0.195e-6,
            offset=-1e-3,
            description="raw voltage, int16 counts",
            comments="a comment with a quote ' and a slash /",
        )
    )
    pressure = np.cumsum(rng.normal(0, 1, 6000))
    stamps = np.sort(rng.uniform(0, 10, 6000))
    nwbfile.add_acquisition(
        TimeSeries(
            name="pressure",
            data=ZarrDataIO(pressure, chunks=(2000,), compressor=numcodecs.GZip(level=1)),
            timestamps=ZarrDataIO(
                stamps, chunks=(1500,), compressor=numcodecs.GZip(level=1), filters=[numcodecs.Delta(dtype="<f8")]
            ),
            unit="kPa",
            description="irregularly sampled pressure",
        )
    )
    frames = rng.integers(0, 255, (10, 32, 32), dtype=np.uint8)
    nwbfile.add_acquisition(
        ImageSeries(
            name="camera",
            data=ZarrDataIO(frames, chunks=(5, 32, 32), compressor=None),
            unit="n.a.",
            rate=30.0,
            starting_time=0.0,
            description="uncompressed camera frames",
        )
    )
    ecephys = nwbfile.create_processing_module(name="ecephys", description="processed ephys")
    lfp_region = nwbfile.create_electrode_table_region(region=[0, 2, 4, 6], description="even channels")
    lfp = ElectricalSeries(
        name="LFP",
        data=rng.normal(0, 1, (2000, 4)).astype(np.float32),
        electrodes=lfp_region,
        rate=1000.0,
        description="downsampled",
    )
    ecephys.add(LFP(electrical_series=lfp))

    nwbfile.add_unit_column(name="quality", description="curation label")
    for i in range(5):
        spikes = np.sort(rng.uniform(0, 0.8, 3 + 2 * i))
        nwbfile.add_unit(spike_times=spikes, quality=["good", "mua"][i % 2], electrodes=[i % 8])
    return nwbfile


def main(out: str) -> None:
    path = Path(out)
    if path.exists():
        shutil.rmtree(path)
    with NWBZarrIO(str(path), mode="w") as io:
        io.write(build())
    print(f"wrote {path} ({sum(p.stat().st_size for p in path.rglob('*') if p.is_file()) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("ephys_v2.nwb.zarr")))
