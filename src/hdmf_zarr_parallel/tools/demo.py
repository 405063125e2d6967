"""``hdmf-zarr-parallel demo``: write a synthetic ephys recording to NWB Zarr, check it, time it.

The recording is :class:`~.examples.SyntheticEphys`: a Neuropixels-style int16 stream that is
not stored in memory but computed for any region on demand, so the demo scales to any length
and the same bytes can be regenerated to check what was written.

The demo writes the recording with :class:`~hdmf_zarr_parallel.NWBParallelZarrIO`,
reads it back with stock ``hdmf_zarr.nwb.NWBZarrIO`` and compares every sample,
then writes it again with stock ``NWBZarrIO`` (one buffer after another) and
prints both throughputs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .examples import BUFFER_CHUNKS, CHUNK_FRAMES, RATE, SyntheticEphys, SyntheticEphysIterator, build_nwbfile


@dataclass(frozen=True)
class DemoConfig:
    """The demo's recording (length, channels), where it is written, and by which engine."""

    seconds: float = 45.0  # 384 channels x 30 kHz x 45 s of int16: 1.04 GB
    channels: int = 384
    workdir: Path | None = None  # None: a temporary folder, removed afterwards
    engine: str | None = None  # None: "auto"
    workers: int | None = None

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        if self.channels < 1:
            raise ValueError(f"--channels must be >= 1, got {self.channels}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")

    @property
    def num_frames(self) -> int:
        return max(1, round(self.seconds * RATE))

    @property
    def nbytes(self) -> int:
        return self.num_frames * self.channels * 2


def _timed_write(path: Path, make_io: Callable[[str], Any], config: DemoConfig) -> tuple[float, Any]:
    nwbfile = build_nwbfile(SyntheticEphysIterator(config.num_frames, config.channels), config.channels)
    if path.exists():
        shutil.rmtree(path)
    start = time.perf_counter()
    with make_io(str(path)) as io:
        io.write(nwbfile)
    return time.perf_counter() - start, io


def verify(path: Path, config: DemoConfig) -> tuple[bool, str, int]:
    """Read ``path`` with stock NWBZarrIO and compare every sample; returns (ok, detail, stored bytes)."""
    from hdmf_zarr.nwb import NWBZarrIO

    source = SyntheticEphys(config.channels)
    with NWBZarrIO(str(path), mode="r") as io:
        nwbfile = io.read()
        series = nwbfile.acquisition["ElectricalSeries"]
        data = series.data
        stored = int(data.nbytes_stored()) if hasattr(data, "nbytes_stored") else 0
        expected_shape = (config.num_frames, config.channels)
        if tuple(data.shape) != expected_shape or np.dtype(data.dtype) != np.int16:
            return False, f"shape/dtype {tuple(data.shape)} {data.dtype}, expected {expected_shape} int16", stored
        if len(series.electrodes) != config.channels:
            return False, f"{len(series.electrodes)} electrodes referenced, expected {config.channels}", stored
        step = BUFFER_CHUNKS * CHUNK_FRAMES
        for start in range(0, config.num_frames, step):
            stop = min(start + step, config.num_frames)
            got = np.asarray(data[start:stop])
            want = source.frames(start, stop)
            if not np.array_equal(got, want):
                bad = np.argwhere(got != want)[0]
                return False, f"first mismatch at frame {start + bad[0]}, channel {bad[1]}", stored
    return True, f"{config.nbytes:,} bytes identical", stored


def _engine_choice() -> tuple[str, str]:
    try:
        from ..engines import choose_auto_engine

        return choose_auto_engine()
    except Exception as exc:  # noqa: BLE001 - only informative here; the write itself reports real errors
        return "unknown", f"could not determine ({type(exc).__name__}: {exc})"


def run_demo(config: DemoConfig, out: TextIO) -> bool:
    """Run the demo, printing to ``out``; returns whether the read-back matched."""
    from hdmf_zarr.nwb import NWBZarrIO

    from ..io import NWBParallelZarrIO

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    engine = config.engine or "auto"
    auto_name, auto_reason = _engine_choice()
    probe = SyntheticEphysIterator(config.num_frames, config.channels)
    say("hdmf-zarr-parallel demo")
    say(
        f"  recording : {config.channels} channels x {RATE / 1000:g} kHz x {config.num_frames / RATE:g} s int16 "
        f"= {config.nbytes / 1e9:.3f} GB"
    )
    say(f"  layout    : chunks {probe.chunk_shape}, iterator buffers {probe.buffer_shape}")
    say(f"  auto engine: {auto_name} — {auto_reason}")
    say(f"  engine    : {engine}" + (f", {config.workers} workers" if config.workers else ""))

    warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)  # hdmf-zarr's own
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hdmf-zarr-parallel-demo-")) if temporary else Path(config.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        say(f"  workdir   : {workdir}" + (" (temporary)" if temporary else ""))
        ours_path, stock_path = workdir / "demo_parallel.nwb.zarr", workdir / "demo_stock.nwb.zarr"

        say("writing with NWBParallelZarrIO ...")
        ours_s, io = _timed_write(
            ours_path,
            lambda p: NWBParallelZarrIO(p, mode="w", engine=engine, max_workers=config.workers, progress=True),
            config,
        )
        report = io.last_write_report
        used = report.engine if report is not None else engine
        say(f"  engine used: {used}")

        ok, detail, stored = verify(ours_path, config)
        ratio = f", compression ratio {config.nbytes / stored:.2f}x" if stored else ""
        say(f"read back with stock NWBZarrIO: {'PASS' if ok else 'FAIL'} — {detail}{ratio}")

        say("writing with stock NWBZarrIO (serial) ...")
        stock_s, _ = _timed_write(stock_path, lambda p: NWBZarrIO(p, mode="w"), config)

        mb = config.nbytes / 1e6
        rows = [(f"hdmf-zarr-parallel, {used}", ours_s), ("hdmf-zarr stock, serial", stock_s)]
        width = max(len(name) for name, _ in rows)
        say()
        say(f"{'writer':<{width}}  {'seconds':>8}  {'MB/s':>8}")
        for name, seconds in rows:
            say(f"{name:<{width}}  {seconds:8.2f}  {mb / seconds:8.1f}")
        say(f"speed-up: {stock_s / ours_s:.2f}x")
        say("PASS" if ok else "FAIL")
        return ok
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
