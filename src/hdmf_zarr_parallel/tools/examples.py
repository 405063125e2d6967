"""Example data and NWB files: what the demo, the benchmarks, the tests and the notebooks write.

* :class:`SyntheticEphys` and :class:`SyntheticEphysIterator`: a Neuropixels-style int16
  recording of any length, computed on demand from two small seeded tables: Gaussian noise per
  channel, a slow spatially correlated LFP and sparse spikes. Its data compress like real ephys
  data (neither zeros nor uniform noise), and the same bytes can be regenerated to check what
  was written.
* :func:`build_nwbfile`, :func:`build_example_nwbfile`, :func:`write_example_hdf5`: NWB files
  around such data, from one ``ElectricalSeries`` to every neurodata type a conversion must
  carry over (electrodes, LFP, two-photon imaging, units), in memory or as NWB HDF5.
* :class:`NpyMemmapIterator`: buffers of a ``.npy`` file, read through a memory map; it pickles
  by path, so worker processes reopen the file instead of receiving its data.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from hdmf.data_utils import GenericDataChunkIterator

from .reopening import ReopensFromState

RATE = 30_000.0
NOISE_FRAMES = 65_536  # rows of the noise table; the LFP table has a coprime length
LFP_FRAMES = 30_011
CHUNK_FRAMES = 32_768  # chunks of 32768 frames x 64 channels: 4 MiB of int16
CHUNK_CHANNELS = 64
BUFFER_CHUNKS = 8  # iterator buffers span 8 chunks in time and every channel


class SyntheticEphys:
    """A deterministic int16 recording of any length, computed from two seeded tables.

    Frame ``f`` is ``noise[f % 65536] + lfp[f % 30011]``: the two periods are coprime,
    so the sum only repeats after about 18 hours of 30 kHz data, while any region
    costs two gathers and an add.
    """

    def __init__(self, channels: int, seed: int = 20240611) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.seed = seed
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((NOISE_FRAMES, channels), dtype=np.float32)
        noise *= rng.uniform(8.0, 16.0, size=channels).astype(np.float32)  # per-channel noise level
        spikes = rng.integers(0, NOISE_FRAMES - 40, size=NOISE_FRAMES * channels // 3000)
        spike_channels = rng.integers(0, channels, size=spikes.size)
        waveform = (-120.0 * np.exp(-0.5 * ((np.arange(40) - 10) / 3.0) ** 2)).astype(np.float32)
        waveform[14:] += (30.0 * np.exp(-0.5 * ((np.arange(26) - 10) / 6.0) ** 2)).astype(np.float32)
        for start, channel in zip(spikes, spike_channels, strict=True):
            noise[start : start + 40, channel] += waveform
        self._noise = np.rint(noise).astype(np.int16)
        t = (np.arange(LFP_FRAMES, dtype=np.float32) / np.float32(RATE))[:, None]
        depth = np.linspace(0.0, 1.0, channels, dtype=np.float32)[None, :]
        lfp = 80.0 * np.sin(2 * np.pi * (7.0 * t + 0.8 * depth)) + 30.0 * np.sin(2 * np.pi * (2.0 * t + 0.3 * depth))
        self._lfp = np.rint(lfp).astype(np.int16)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of every channel, shape ``(stop - start, channels)``."""
        out = np.empty((max(0, stop - start), self.channels), dtype=np.int16)
        _tile_rows(self._noise, start, out, add=False)
        _tile_rows(self._lfp, start, out, add=True)
        return out


def _tile_rows(table: np.ndarray, start: int, out: np.ndarray, add: bool) -> None:
    """``out[i] (+)= table[(start + i) % len(table)]``, as a few contiguous slice copies."""
    period, done = len(table), 0
    while done < len(out):
        offset = (start + done) % period
        count = min(period - offset, len(out) - done)
        if add:
            out[done : done + count] += table[offset : offset + count]
        else:
            out[done : done + count] = table[offset : offset + count]
        done += count


class SyntheticEphysIterator(GenericDataChunkIterator):
    """A picklable GenericDataChunkIterator over a :class:`SyntheticEphys` recording."""

    concurrent_reads = True  # every region is computed from read-only tables

    def __init__(self, num_frames: int, channels: int, seed: int = 20240611, **kwargs: Any) -> None:
        if num_frames < 1:
            raise ValueError(f"the recording must have at least one frame, got {num_frames}")
        self._init_args = dict(num_frames=num_frames, channels=channels, seed=seed)
        self._num_frames = num_frames
        self._source = SyntheticEphys(channels, seed)
        kwargs.setdefault("chunk_shape", (min(num_frames, CHUNK_FRAMES), min(channels, CHUNK_CHANNELS)))
        kwargs.setdefault("buffer_shape", (min(num_frames, BUFFER_CHUNKS * CHUNK_FRAMES), channels))
        self._kwargs = dict(kwargs)
        super().__init__(**kwargs)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        rows, cols = selection
        start, stop, _ = rows.indices(self._num_frames)
        return self._source.frames(start, stop)[:, cols]

    def _get_maxshape(self) -> tuple[int, int]:
        return (self._num_frames, self._source.channels)

    def _get_dtype(self) -> np.dtype:
        return np.dtype("int16")

    def _to_dict(self) -> dict:
        return {**self._init_args, **self._kwargs}

    @staticmethod
    def _from_dict(state: dict) -> SyntheticEphysIterator:
        return SyntheticEphysIterator(**state)


START = datetime(2024, 6, 11, 12, 0, tzinfo=UTC)


def new_nwbfile(description: str, identifier: str, start: datetime = START, **fields: Any):
    """An empty ``NWBFile`` (``fields``: any other ``NWBFile`` arguments, e.g. ``lab``)."""
    from pynwb import NWBFile

    return NWBFile(session_description=description, identifier=identifier, session_start_time=start, **fields)


def add_probe(nwbfile: Any, channels: int) -> Any:
    """A synthetic Neuropixels-like probe: a device, a shank, one electrode per channel; returns
    the electrodes-table region over all of them (what an ElectricalSeries points at)."""
    probe = nwbfile.create_device(name="probe", description="synthetic Neuropixels-like probe")
    shank = nwbfile.create_electrode_group(name="shank0", description="synthetic shank", location="CA1", device=probe)
    for channel in range(channels):
        nwbfile.add_electrode(
            group=shank, location="CA1", x=float(16 * (channel % 4)), y=float(20 * (channel // 2)), z=0.0
        )
    return nwbfile.create_electrode_table_region(region=list(range(channels)), description="all channels")


def add_raw_ephys(nwbfile: Any, data: Any, channels: int, description: str = "no description") -> Any:
    """The probe of :func:`add_probe` and, in acquisition, a 30 kHz ``ElectricalSeries`` of int16
    counts (0.195 µV each) over all its channels; returns the series."""
    from pynwb.ecephys import ElectricalSeries

    series = ElectricalSeries(
        name="ElectricalSeries",
        data=data,
        electrodes=add_probe(nwbfile, channels),
        rate=RATE,
        starting_time=0.0,
        conversion=0.195e-6,
        description=description,
    )
    nwbfile.add_acquisition(series)
    return series


def add_two_photon_series(nwbfile: Any, data: Any, rate: float = 30.0) -> Any:
    """A two-photon microscope, its imaging plane and, in acquisition, a ``TwoPhotonSeries`` of
    ``data`` (frames x height x width) at ``rate`` frames per second; returns the series."""
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    microscope = nwbfile.create_device(name="microscope", description="two-photon microscope")
    plane = nwbfile.create_imaging_plane(
        name="plane0",
        optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0),
        description="layer 2/3",
        device=microscope,
        excitation_lambda=920.0,
        imaging_rate=rate,
        indicator="GCaMP6f",
        location="V1",
    )
    series = TwoPhotonSeries(name="TwoPhotonSeries", data=data, imaging_plane=plane, rate=rate, unit="n.a.")
    nwbfile.add_acquisition(series)
    return series


def build_nwbfile(data: Any, channels: int):
    """An NWBFile holding ``data`` as an ElectricalSeries over a ``channels``-row electrodes table."""
    nwbfile = new_nwbfile("hdmf-zarr-parallel demo: synthetic 30 kHz int16 recording", "hdmf-zarr-parallel-demo")
    add_raw_ephys(nwbfile, data, channels, description="synthetic int16 ephys")
    return nwbfile


def build_example_nwbfile(
    seconds: float = 2.0,
    channels: int = 32,
    frames: int = 60,
    frame_side: int = 64,
    units: int = 8,
    seed: int = 20240611,
    wrap: Callable[[np.ndarray], Any] = lambda data: data,
):
    """A small NWBFile with the neurodata types a conversion must carry over.

    It holds an electrodes table, a raw int16 ``ElectricalSeries`` in acquisition, a
    downsampled ``LFP`` (``ElectricalSeries`` over an electrodes region) in an ``ecephys``
    processing module, a uint16 ``TwoPhotonSeries`` with its imaging plane, and a units
    table with ragged spike times and an electrodes column. Data are synthetic, seeded
    and compressible (the ephys is :class:`SyntheticEphys`). ``wrap`` is applied to the
    three large arrays (raw, LFP, movie), e.g. to give them HDF5 storage settings.
    """
    from pynwb.ecephys import LFP, ElectricalSeries

    rng = np.random.default_rng(seed)
    num_frames = max(1, round(seconds * RATE))
    nwbfile = new_nwbfile(
        "hdmf-zarr-parallel example: ephys, LFP, two-photon imaging and units",
        "hdmf-zarr-parallel-example",
        experimenter=["Doe, Jane"],
        lab="example lab",
        institution="example institute",
    )
    raw = SyntheticEphys(channels, seed).frames(0, num_frames)
    add_raw_ephys(nwbfile, wrap(raw), channels, description="synthetic raw int16 ephys")

    half = nwbfile.create_electrode_table_region(region=list(range(0, channels, 2)), description="even channels")
    lfp_data = raw[::30, ::2].astype(np.float32) * np.float32(0.195)
    ecephys = nwbfile.create_processing_module(name="ecephys", description="processed extracellular data")
    lfp = LFP()
    ecephys.add(lfp)  # attached first, so its series' electrodes region shares an ancestor with the table
    lfp.add_electrical_series(
        ElectricalSeries(name="LFP", data=wrap(lfp_data), electrodes=half, rate=RATE / 30, filtering="decimated 30x")
    )

    yy, xx = np.mgrid[:frame_side, :frame_side]
    background = 200.0 + 100.0 * np.sin(yy / 9.0) * np.cos(xx / 7.0)
    movie = background[None] * (1.0 + 0.3 * np.sin(np.arange(frames) / 5.0))[:, None, None]
    movie += rng.normal(0.0, 8.0, size=movie.shape)
    add_two_photon_series(nwbfile, wrap(np.clip(np.rint(movie), 0, 65535).astype(np.uint16)))

    nwbfile.add_unit_column(name="quality", description="curation label")
    duration = num_frames / RATE
    for unit in range(units):
        count = int(rng.integers(0, 40)) if unit else 0  # one unit without spikes: an empty ragged row
        nwbfile.add_unit(
            spike_times=np.sort(rng.uniform(0.0, duration, size=count)),
            electrodes=[unit % channels, (unit + 1) % channels],
            quality="good" if unit % 3 else "mua",
        )
    return nwbfile


def write_example_hdf5(path: str | Path, compressed: bool = False, **kwargs: Any) -> Path:
    """Write :func:`build_example_nwbfile` (``kwargs`` passed on) to an NWB HDF5 file at ``path``.

    ``compressed=True`` stores its large arrays as NWB conversion tools usually write them: in
    chunks of about 1 MiB along time, shuffled and gzip-compressed (level 4). Else they are
    contiguous and uncompressed.
    """
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO

    def gzip(data: np.ndarray) -> H5DataIO:
        rows = max(1, (1 << 20) // (math.prod(data.shape[1:]) * data.itemsize))
        chunks = (min(rows, data.shape[0]), *data.shape[1:])
        return H5DataIO(data, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)

    path = Path(path)
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(build_example_nwbfile(**kwargs, **({"wrap": gzip} if compressed else {})))
    return path


class NpyMemmapIterator(ReopensFromState, GenericDataChunkIterator):
    """Reads buffers from a memmapped ``.npy`` file; pickles by path (the copy reopens the memmap).

    ``pid_log``: a file each read appends its process and thread id to, for tests and benchmarks
    that check where the reads ran.
    """

    concurrent_reads = True  # slicing a read-only memmap is thread-safe

    def __init__(self, path: str, pid_log: str | None = None, **kwargs) -> None:
        self.path = str(path)
        self.pid_log = pid_log
        self._array = np.load(self.path, mmap_mode="r")
        kwargs.setdefault("display_progress", False)
        super().__init__(**kwargs)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        if self.pid_log:
            with open(self.pid_log, "a") as f:
                f.write(f"{os.getpid()} {threading.get_ident()}\n")
        return np.array(self._array[selection])  # really read, not a view of the map

    def _get_maxshape(self) -> tuple[int, ...]:
        return self._array.shape

    def _get_dtype(self) -> np.dtype:
        return self._array.dtype

    def _to_dict(self) -> dict:
        return {
            "path": self.path,
            "pid_log": self.pid_log,
            "chunk_shape": tuple(self.chunk_shape),
            "buffer_shape": tuple(self.buffer_shape),
        }
