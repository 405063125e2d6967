"""``hdmf-zarr-parallel bench``: write throughput on this machine, stock hdmf-zarr next to ours.

It generates realistic, compressible recordings (int16 Neuropixels-like ephys and
uint16 two-photon frames, saved as ``.npy`` and read through a memmap), writes the
same NWB file with stock ``NWBZarrIO`` (serial, and ``number_of_jobs=N``) and with
``NWBParallelZarrIO`` on each engine, same chunks and codec, checks each output reads
back bit-exact with stock hdmf-zarr, prints a table and saves a PNG bar chart of
throughput per writer (matplotlib, Agg backend).

The data generators, the picklable memmap iterator and the NWB builders here are
shared with ``benchmarks/bench_write.py``, the full benchmark (repeats, encode-only
ceiling, profiles, JSON for RESULTS.md).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from hdmf.data_utils import GenericDataChunkIterator

from .reopening import ReopensFromState

EPHYS_RATE = 30_000.0
IMAGING_RATE = 30.0


# --------------------------------------------------------------------------------------
# The source iterator
# --------------------------------------------------------------------------------------
class NpyMemmapIterator(ReopensFromState, GenericDataChunkIterator):
    """Reads buffers from a memmapped ``.npy`` file; pickles by path (the copy reopens the memmap)."""

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


# --------------------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------------------
def _interp_rows(coarse: np.ndarray, step: int, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of a signal that is ``coarse`` linearly interpolated between every ``step`` rows."""
    assert r0 % step == 0 and (r1 - r0) % step == 0
    c = coarse[r0 // step : r1 // step + 1]
    f = (np.arange(step, dtype=np.float32) / step)[None, :, None]
    out = c[:-1, None, :] * (1 - f) + c[1:, None, :] * f
    return out.reshape(r1 - r0, coarse.shape[1])


def generate_ephys(path: Path, nbytes: float, seed: int, channels: int = 384) -> tuple[int, ...]:
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
    from pynwb import NWBFile

    return NWBFile(
        session_description=description,
        identifier="hdmf-zarr-parallel-benchmark",
        session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )


def build_ephys_nwb(iterator: NpyMemmapIterator):
    from .demo import add_raw_ephys

    nwb = _nwbfile("benchmark: ephys")
    add_raw_ephys(nwb, iterator, iterator.maxshape[1])
    return nwb


def build_imaging_nwb(iterator: NpyMemmapIterator):
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = _nwbfile("benchmark: two-photon imaging")
    device = nwb.create_device(name="microscope", description="two-photon microscope")
    channel = OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane0",
        optical_channel=channel,
        description="layer 2/3",
        device=device,
        excitation_lambda=920.0,
        imaging_rate=IMAGING_RATE,
        indicator="GCaMP6f",
        location="V1",
    )
    nwb.add_acquisition(
        TwoPhotonSeries(name="TwoPhotonSeries", data=iterator, imaging_plane=plane, rate=IMAGING_RATE, unit="n.a.")
    )
    return nwb


# --------------------------------------------------------------------------------------
# The user-facing benchmark
# --------------------------------------------------------------------------------------
STOCK_WRITERS = ("stock-serial", "stock-jobs")
WRITERS = (*STOCK_WRITERS, "serial", "threads", "processes", "gpu")
DEFAULT_WRITERS = ("stock-serial", "stock-jobs", "threads", "processes", "gpu")  # gpu only where usable


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


@dataclass(frozen=True)
class BenchConfig:
    ephys_mb: float = 500.0
    imaging_mb: float = 250.0
    cases: tuple[str, ...] = ("ephys", "imaging")
    writers: tuple[str, ...] = DEFAULT_WRITERS
    workers: int | None = None
    repeats: int = 1
    buffer_mb: int = 64
    workdir: Path | None = None  # None: a temporary folder, removed afterwards
    png: Path = Path("hdmf-zarr-parallel-bench.png")
    verify: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [w for w in self.writers if w not in WRITERS]
        if unknown:
            raise ValueError(f"unknown writer(s) {', '.join(unknown)}; choose from {', '.join(WRITERS)}")
        bad = [c for c in self.cases if c not in ("ephys", "imaging")]
        if bad:
            raise ValueError(f"unknown case(s) {', '.join(bad)}; choose from ephys, imaging")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not (self.ephys_mb > 0 and self.imaging_mb > 0):
            raise ValueError("data sizes must be > 0 MB")

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        """Tiny data (24 MB ephys, 12 MB imaging), for a smoke test in seconds."""
        return cls(**{"ephys_mb": 24.0, "imaging_mb": 12.0, "buffer_mb": 8, **changes})


@dataclass
class BenchRow:
    case: str
    writer: str
    label: str
    seconds: list[float] = field(default_factory=list)
    nbytes: int = 0
    engine: str | None = None
    skipped: str | None = None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def mbps(self) -> float:
        return self.nbytes / self.best / 1e6


def _workers(config: BenchConfig) -> int:
    from .options import default_workers

    return config.workers or default_workers()


def writer_label(writer: str, workers: int) -> str:
    """How tables name each writer (shared with ``benchmarks/bench_write.py``)."""
    return {
        "stock-serial": "stock hdmf-zarr, serial",
        "stock-jobs": f"stock hdmf-zarr, number_of_jobs={workers}",
        "serial": "ours, serial",
        "threads": f"ours, threads ({workers})",
        "processes": f"ours, processes ({workers})",
        "auto": "ours, auto",
        "gpu": "ours, gpu",
        "dask": f"ours, dask LocalCluster ({workers})",
    }[writer]


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


def make_bench_cases(config: BenchConfig, workdir: Path, say: Callable[[str], None]) -> list[BenchCase]:
    cases = []
    for name in config.cases:
        if name == "ephys":
            npy = workdir / f"ephys-{config.ephys_mb:g}MB-seed{config.seed}.npy"
            cases.append(ephys_case(npy, config.ephys_mb * 1e6, config.buffer_mb, config.seed, say))
        else:
            npy = workdir / f"imaging-{config.imaging_mb:g}MB-seed{config.seed}.npy"
            cases.append(imaging_case(npy, config.imaging_mb * 1e6, config.buffer_mb, config.seed, say))
    return cases


def _generate_once(npy: Path, generate: Callable[[Path], tuple[int, ...]], say: Callable[[str], None]) -> tuple:
    if npy.exists():
        return tuple(np.load(npy, mmap_mode="r").shape)
    t0 = time.perf_counter()
    partial = npy.with_suffix(".partial.npy")
    shape = generate(partial)
    partial.rename(npy)
    say(f"  generated {npy.name}: {shape}, {npy.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    return shape


def write_case(case: BenchCase, writer: str, out: Path, workers: int) -> tuple[float, str | None]:
    """Write ``case`` once with ``writer`` into ``out``; returns (seconds, engine used)."""
    from hdmf_zarr.nwb import NWBZarrIO

    from .io import NWBParallelZarrIO

    nwbfile = case.build(case.iterator())
    start = time.perf_counter()
    if writer in STOCK_WRITERS:
        with NWBZarrIO(str(out), mode="w") as io:
            io.write(nwbfile, number_of_jobs=workers if writer == "stock-jobs" else 1)
        return time.perf_counter() - start, None
    with NWBParallelZarrIO(str(out), mode="w", engine=writer, max_workers=workers) as io:
        io.write(nwbfile)
        report = io.last_write_report
    return time.perf_counter() - start, getattr(report, "engine", None)


def check_output(case: BenchCase, out: Path) -> None:
    """Read ``out`` back with stock NWBZarrIO and compare with the source, buffer by buffer."""
    from hdmf_zarr.nwb import NWBZarrIO

    source = np.load(case.npy, mmap_mode="r")
    with NWBZarrIO(str(out), mode="r") as io:
        data = io.read().acquisition[case.series].data
        if tuple(data.shape) != case.shape or np.dtype(data.dtype) != case.dtype:
            raise AssertionError(f"{case.name}: read back {data.shape} {data.dtype}, expected {case.shape}")
        step = case.buffer_shape[0]
        for start in range(0, case.shape[0], step):
            if not np.array_equal(data[start : start + step], source[start : start + step]):
                raise AssertionError(f"{case.name}: data differ in rows {start}:{start + step}")


def format_table(rows: list[BenchRow]) -> str:
    base = {r.case: r.best for r in rows if r.writer == "stock-serial" and not r.skipped and r.seconds}
    head = ("case", "writer", "seconds", "MB/s", "x stock serial")
    lines = [head]
    for r in rows:
        if r.skipped:
            lines.append((r.case, r.label, "-", "-", "skipped"))
            continue
        speedup = f"{base[r.case] / r.best:.2f}" if r.case in base else "-"
        fell_back = r.engine and r.engine.split()[0] != r.writer
        label = r.label + (f" [ran as {r.engine}]" if fell_back else "")
        lines.append((r.case, label, f"{r.best:.2f}", f"{r.mbps:.1f}", speedup))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    reasons = dict.fromkeys(f"{r.label} skipped: {r.skipped}" for r in rows if r.skipped)
    return "\n".join([*out, *reasons])


def save_chart(rows: list[BenchRow], png: Path, title: str) -> Path:
    """A grouped bar chart of MB/s: one group per case, one bar per writer (stock in grey)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    done = [r for r in rows if not r.skipped and r.seconds]
    cases = list(dict.fromkeys(r.case for r in done))
    writers = list(dict.fromkeys(r.writer for r in done))
    labels = {r.writer: r.label for r in done}
    width = 0.8 / max(1, len(writers))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases) * len(writers) / 2 + 3), 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greys = iter(("#9a9a9a", "#5f5f5f"))
    ours = iter(colors)
    for i, writer in enumerate(writers):
        color = next(greys) if writer in STOCK_WRITERS else next(ours)
        xs, ys = [], []
        for j, case in enumerate(cases):
            match = [r for r in done if r.case == case and r.writer == writer]
            if match:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(match[0].mbps)
        bars = ax.bar(xs, ys, width * 0.92, label=labels[writer], color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("write throughput (MB/s, uncompressed)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def run_bench(config: BenchConfig, out: TextIO) -> tuple[list[BenchRow], Path]:
    """Run the benchmark, printing progress and the table to ``out``; returns the rows and the PNG path."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    from .engines import choose_auto_engine

    workers = _workers(config)
    auto_name, auto_reason = choose_auto_engine()
    say(f"hdmf-zarr-parallel bench: {workers} workers; auto engine: {auto_name} — {auto_reason}")
    warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hdmf-zarr-parallel-bench-")) if temporary else Path(config.workdir)
    rows: list[BenchRow] = []
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        for case in make_bench_cases(config, workdir, say):
            say(f"{case.name}: {case.shape} {case.dtype}, {case.nbytes / 1e6:.0f} MB, chunks {case.chunks}")
            for writer in config.writers:
                row = BenchRow(case.name, writer, writer_label(writer, workers), nbytes=case.nbytes)
                rows.append(row)
                if writer == "gpu" and auto_name != "gpu":
                    row.skipped = auto_reason.split(": ", 1)[-1]
                    continue
                target = workdir / f"out-{case.name}-{writer}.nwb.zarr"
                for repeat in range(config.repeats):
                    shutil.rmtree(target, ignore_errors=True)
                    try:
                        seconds, row.engine = write_case(case, writer, target, workers)
                    except Exception as exc:  # noqa: BLE001 - a writer that cannot run is reported, not fatal
                        row.skipped = " ".join(f"{type(exc).__name__}: {exc}".split())
                        break
                    row.seconds.append(seconds)
                    if repeat == 0 and config.verify:
                        check_output(case, target)
                    say(f"  {row.label:<36} {seconds:7.2f} s  {case.nbytes / seconds / 1e6:8.1f} MB/s")
                shutil.rmtree(target, ignore_errors=True)
                if row.skipped:
                    say(f"  {row.label:<36} skipped: {row.skipped}")
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    say()
    say(format_table(rows))
    title = (
        f"NWB Zarr write throughput, {os.cpu_count()} CPUs, {workers} workers"
        f"{', GPU' if auto_name == 'gpu' else ''} ({dt.date.today():%Y-%m-%d})"
    )
    png = save_chart(rows, config.png, title)
    say(f"\nchart: {png}")
    return rows, png
