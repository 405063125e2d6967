"""The benchmarks' data: realistic, compressible recordings saved as ``.npy``, and the NWB files
around them.

:func:`generate_ephys` writes Neuropixels-like int16 ephys (pink-ish noise per channel, a
common-mode wander, spikes spread over neighbouring channels), :func:`generate_imaging` uint16
two-photon frames (a smooth background, cells with calcium transients, shot and read noise).
Both are seeded, so a file of a given size and seed is generated once and reused. A
:class:`BenchCase` is one such recording with its chunks, iterator buffers and NWB file; it is
read through :class:`~.examples.NpyMemmapIterator`.

Shared by ``hdmf-zarr-parallel bench`` (:mod:`.bench`) and the full benchmarks in
``benchmarks/`` (``bench_write.py``, ``bench_gpu_layouts.py``, ``bench_convert_v2.py``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .examples import NpyMemmapIterator, add_raw_ephys, add_two_photon_series, new_nwbfile

EPHYS_RATE = 30_000.0
IMAGING_RATE = 30.0


def _interp_rows(coarse: np.ndarray, step: int, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of a signal that is ``coarse`` linearly interpolated between every ``step`` rows."""
    assert r0 % step == 0 and (r1 - r0) % step == 0
    c = coarse[r0 // step : r1 // step + 1]
    f = (np.arange(step, dtype=np.float32) / step)[None, :, None]
    out = c[:-1, None, :] * (1 - f) + c[1:, None, :] * f
    return out.reshape(r1 - r0, coarse.shape[1])


def generate_ephys(path: Path, nbytes: float, seed: int, channels: int = 384) -> tuple[int, ...]:
    """Write about ``nbytes`` of int16 ephys, ``channels`` wide at 30 kHz, to the ``.npy`` file ``path``; its shape."""
    rng = np.random.default_rng(seed)
    block = 65536
    rows = int(nbytes // (channels * 2))
    padded = math.ceil(rows / block) * block
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=(rows, channels))
    # pink-ish: slower time scales get more amplitude; plus a common-mode reference wander
    scales = [(2048, 45.0), (512, 30.0), (128, 18.0), (16, 8.0)]
    coarse = [(s, rng.standard_normal((padded // s + 1, channels), dtype=np.float32) * a) for s, a in scales]
    common = rng.standard_normal((padded // 4096 + 1, 1), dtype=np.float32) * 25.0
    t = np.arange(48, dtype=np.float32)
    template = -np.exp(-(((t - 12) / 3.0) ** 2)) + 0.35 * np.exp(-(((t - 22) / 7.0) ** 2))  # trough, then bump
    spread = np.exp(-np.abs(np.arange(-3, 4)) / 1.5).astype(np.float32)
    spikes_per_block = int(channels * 8.0 * block / EPHYS_RATE)  # ~8 Hz per channel
    for r0 in range(0, padded, block):
        r1 = r0 + block
        x = rng.standard_normal((block, channels), dtype=np.float32)
        x *= 12.0
        for s, c in coarse:
            x += _interp_rows(c, s, r0, r1)
        x += _interp_rows(common, 4096, r0, r1)
        ts = rng.integers(0, block - len(t), spikes_per_block)
        cs = rng.integers(3, channels - 3, spikes_per_block)
        amps = rng.uniform(40, 220, spikes_per_block).astype(np.float32)
        rows_idx = (ts[:, None, None] + np.arange(len(t))[None, :, None]).repeat(7, axis=2)
        cols_idx = (cs[:, None, None] + np.arange(-3, 4)[None, None, :]).repeat(len(t), axis=1)
        vals = amps[:, None, None] * template[None, :, None] * spread[None, None, :]
        np.add.at(x, (rows_idx.ravel(), cols_idx.ravel()), vals.ravel())
        n = min(r1, rows) - r0
        if n <= 0:
            break
        np.rint(x[:n], out=x[:n])
        np.clip(x[:n], -32768, 32767, out=x[:n])
        out[r0 : r0 + n] = x[:n]
    out.flush()
    del out
    return (rows, channels)


def generate_imaging(path: Path, nbytes: float, seed: int, side: int = 512) -> tuple[int, ...]:
    """Write about ``nbytes`` of uint16 ``side`` x ``side`` frames at 30 Hz to the ``.npy`` file ``path``; its shape."""
    rng = np.random.default_rng(seed)
    frames = int(nbytes // (side * side * 2))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(frames, side, side))
    # smooth background: coarse noise upsampled twice by linear interpolation
    g = 16
    coarse = rng.uniform(150, 600, (side // g + 1, side // g + 1)).astype(np.float32)
    rows = _interp_rows(coarse, g, 0, side)  # (side, side//g+1)
    background = _interp_rows(np.ascontiguousarray(rows.T), g, 0, side).T  # (side, side)
    ncells, r = 300, 7
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    patch = np.exp(-(yy**2 + xx**2) / (2 * 3.0**2)).astype(np.float32)
    cy = rng.integers(r, side - r - 1, ncells)
    cx = rng.integers(r, side - r - 1, ncells)
    brightness = rng.uniform(150, 800, ncells).astype(np.float32)
    for k in range(ncells):
        background[cy[k] - r : cy[k] + r + 1, cx[k] - r : cx[k] + r + 1] += 0.5 * brightness[k] * patch
    # calcium traces: spikes -> exponential decay (tau ~ 1 s), as dF/F
    decay = np.exp(-1.0 / IMAGING_RATE).astype(np.float32)
    events = (rng.random((frames, ncells)) < 0.5 / IMAGING_RATE) * rng.uniform(0.5, 2.5, (frames, ncells))
    trace = np.zeros((frames, ncells), dtype=np.float32)
    acc = np.zeros(ncells, dtype=np.float32)
    for f in range(frames):
        acc = acc * decay + events[f]
        trace[f] = acc
    block = 32
    for f0 in range(0, frames, block):
        f1 = min(frames, f0 + block)
        x = np.broadcast_to(background, (f1 - f0, side, side)).copy()
        x *= 1 + 0.02 * rng.standard_normal((f1 - f0, 1, 1), dtype=np.float32)  # illumination flicker
        for k in range(ncells):
            amp = (trace[f0:f1, k] * brightness[k])[:, None, None]
            x[:, cy[k] - r : cy[k] + r + 1, cx[k] - r : cx[k] + r + 1] += amp * patch
        # shot noise (1 count per photon) and read noise (4 counts)
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        noise *= np.sqrt(x + 16.0)
        x += noise
        np.rint(x, out=x)
        np.clip(x, 0, 65535, out=x)
        out[f0:f1] = x
    out.flush()
    del out
    return (frames, side, side)


def _nwbfile(description: str):
    return new_nwbfile(description, "hdmf-zarr-parallel-benchmark", start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


def build_ephys_nwb(iterator: NpyMemmapIterator):
    """An NWB file with the ephys ``iterator`` as its raw ``ElectricalSeries``."""
    nwb = _nwbfile("benchmark: ephys")
    add_raw_ephys(nwb, iterator, iterator.maxshape[1])
    return nwb


def build_imaging_nwb(iterator: NpyMemmapIterator):
    """An NWB file with the imaging ``iterator`` as its ``TwoPhotonSeries``."""
    nwb = _nwbfile("benchmark: two-photon imaging")
    add_two_photon_series(nwb, iterator, rate=IMAGING_RATE)
    return nwb


@dataclass(frozen=True)
class BenchCase:
    """One recording to write: the data file, its chunks and iterator buffers, the NWB file around it."""

    name: str
    npy: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    buffer_shape: tuple[int, ...]
    series: str
    build: Callable[[NpyMemmapIterator], Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def data_path(self) -> str:
        return f"acquisition/{self.series}/data"

    def iterator(self, pid_log: str | None = None) -> NpyMemmapIterator:
        return NpyMemmapIterator(
            str(self.npy), pid_log=pid_log, chunk_shape=self.chunks, buffer_shape=self.buffer_shape
        )


def ephys_case(npy: Path, nbytes: float, buffer_mb: int, seed: int, say: Callable[[str], None]) -> BenchCase:
    """384-channel int16 ephys in ~1 MiB chunks (8192 × 64), iterator buffers of whole chunk rows."""
    shape = _generate_once(npy, lambda p: generate_ephys(p, nbytes, seed), say)
    chunks = (min(8192, shape[0]), min(64, shape[1]))
    rows = max(chunks[0], (buffer_mb << 20) // (shape[1] * 2) // chunks[0] * chunks[0])
    return BenchCase(
        "ephys", npy, shape, np.dtype("int16"), chunks, (min(rows, shape[0]), shape[1]),
        "ElectricalSeries", build_ephys_nwb,
    )  # fmt: skip


def imaging_case(npy: Path, nbytes: float, buffer_mb: int, seed: int, say: Callable[[str], None]) -> BenchCase:
    """512 × 512 uint16 frames in ~1 MiB chunks (8 × 256 × 256), iterator buffers of whole frames."""
    shape = _generate_once(npy, lambda p: generate_imaging(p, nbytes, seed + 1), say)
    chunks = (min(8, shape[0]), min(256, shape[1]), min(256, shape[2]))
    frames = max(chunks[0], (buffer_mb << 20) // (shape[1] * shape[2] * 2) // chunks[0] * chunks[0])
    return BenchCase(
        "imaging", npy, shape, np.dtype("uint16"), chunks, (min(frames, shape[0]), *shape[1:]),
        "TwoPhotonSeries", build_imaging_nwb,
    )  # fmt: skip


def _generate_once(npy: Path, generate: Callable[[Path], tuple[int, ...]], say: Callable[[str], None]) -> tuple:
    """The shape of ``npy``, generated first (under a temporary name, renamed when whole) if missing."""
    if npy.exists():
        return tuple(np.load(npy, mmap_mode="r").shape)
    t0 = time.perf_counter()
    partial = npy.with_suffix(".partial.npy")
    shape = generate(partial)
    partial.rename(npy)
    say(f"  generated {npy.name}: {shape}, {npy.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    return shape
