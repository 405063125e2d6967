"""``hdmf-zarr-parallel bench``: write throughput on this machine, stock hdmf-zarr next to ours.

It generates realistic, compressible recordings (int16 Neuropixels-like ephys and uint16
two-photon frames, saved as ``.npy`` and read through a memmap: :mod:`.bench_data`), writes the
same NWB file with stock ``NWBZarrIO`` (serial, and ``number_of_jobs=N``) and with
``NWBParallelZarrIO`` on each engine, same chunks and codec, checks each output reads back
bit-exact with stock hdmf-zarr, prints a table and saves a PNG bar chart of throughput per
writer (:mod:`.bench_chart`; matplotlib, from the ``[bench]`` extra, checked before any data is
generated).

``benchmarks/bench_write.py`` is the full benchmark (repeats, encode-only ceiling, profiles,
JSON for RESULTS.md); it shares the data, the cases and the writer labels defined here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import bench_chart
from .bench_data import BenchCase, ephys_case, imaging_case

STOCK_WRITERS = ("stock-serial", "stock-jobs")
WRITERS = (*STOCK_WRITERS, "serial", "threads", "processes", "gpu")
DEFAULT_WRITERS = ("stock-serial", "stock-jobs", "threads", "processes", "gpu")  # gpu only where usable


@dataclass(frozen=True)
class BenchConfig:
    """What ``hdmf-zarr-parallel bench`` writes (cases, sizes, writers, repeats) and where."""

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
    """One writer on one case: its best time of the repeats, the engine that ran, or why it was skipped."""

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

    @property
    def stock(self) -> bool:
        """Whether this row is a stock hdmf-zarr writer (drawn in grey)."""
        return self.writer in STOCK_WRITERS


def _workers(config: BenchConfig) -> int:
    from ..options import default_workers

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


def make_bench_cases(config: BenchConfig, workdir: Path, say: Callable[[str], None]) -> list[BenchCase]:
    """The cases ``config`` names, their data generated in ``workdir`` unless already there."""
    cases = []
    for name in config.cases:
        if name == "ephys":
            npy = workdir / f"ephys-{config.ephys_mb:g}MB-seed{config.seed}.npy"
            cases.append(ephys_case(npy, config.ephys_mb * 1e6, config.buffer_mb, config.seed, say))
        else:
            npy = workdir / f"imaging-{config.imaging_mb:g}MB-seed{config.seed}.npy"
            cases.append(imaging_case(npy, config.imaging_mb * 1e6, config.buffer_mb, config.seed, say))
    return cases


def write_case(case: BenchCase, writer: str, out: Path, workers: int) -> tuple[float, str | None]:
    """Write ``case`` once with ``writer`` into ``out``; returns (seconds, engine used)."""
    from hdmf_zarr.nwb import NWBZarrIO

    from ..io import NWBParallelZarrIO

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


def run_bench(config: BenchConfig, out: TextIO) -> tuple[list[BenchRow], Path]:
    """Run the benchmark, printing progress and the table to ``out``; returns the rows and the PNG path.

    Raises :class:`~.bench_chart.MissingExtraError` before any data is generated where matplotlib
    (the ``[bench]`` extra) is missing."""
    from ..engines import choose_auto_engine

    bench_chart.pyplot()  # the chart comes last: fail now, not after the writes

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

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
    png = bench_chart.save_chart(rows, config.png, title)
    say(f"\nchart: {png}")
    return rows, png
