#!/usr/bin/env python
"""Write-throughput benchmark: stock hdmf-zarr vs hdmf-zarr-parallel on realistic NWB data.

What it does, once per run:

1. Generates two realistic recordings into ``--workdir`` as ``.npy`` files and opens
   them with ``np.load(mmap_mode="r")``:

   * ``ephys``: int16, 384 channels at 30 kHz: per-channel pink-ish low-frequency
     activity (LFP-like, linear interpolation of coarse noise at several time
     scales), a common-mode component, extracellular spikes spread over
     neighbouring channels, and gaussian noise (std 12 LSB);
   * ``imaging``: uint16 512x512 frames: a smooth background, a few hundred cells
     with calcium transients, shot noise and read noise.

   Neither is zeros nor uniform random: zarr's default codec (zstd) reaches a
   compression ratio of about 1.5-2, which the run checks and prints.

2. Writes the same NWB file (an ``ElectricalSeries`` with a minimal electrodes table,
   or a ``TwoPhotonSeries``) with identical chunking, iterator buffer and codec
   (zarr's default zstd) to a local directory store, with these configurations:

   ``stock-serial``     stock ``NWBZarrIO.write()``
   ``stock-jobs``       stock ``NWBZarrIO.write(number_of_jobs=N)`` (a process pool)
   ``serial``           ours, ``engine="serial"``
   ``threads``          ours, ``engine="threads"``, ``max_workers=N``
   ``processes``        ours, ``engine="processes"``, ``max_workers=N``
   ``auto``             ours, ``engine="auto"``, ``max_workers=N``
   ``gpu``              ours, ``engine="gpu"`` (only with ``--gpu``; skipped, with the
                        reason, when the engine cannot start)
   ``dask``             ours, ``engine="dask"`` on a ``distributed.LocalCluster`` of N
                        single-threaded worker processes, started once outside the timing
                        (only when named in ``--configs``; needs the ``dask`` extra; its
                        cpu seconds leave out the workers, which are still running)

   N is every core this process may use (``--workers`` to change it). Each
   configuration writes to a fresh directory that is deleted after measuring; each
   is repeated ``--repeats`` times (repetitions interleaved across configurations),
   and the best and median wall times are kept. The first write of every
   configuration is read back with stock ``NWBZarrIO`` and compared with the source,
   element for element, outside the timing.

3. Measures the ceiling: encode-only throughput of the array's own codec chain
   (zarr's default zstd) on all cores, a thread pool over the chunks of the data
   already in memory (only the encoding is timed). A second ceiling also stores every
   encoded chunk as a file in the workdir (zarr's LocalStore, the same filesystem as the
   writes): the "% enc+store" column. The gap between the two is what the filesystem
   costs, which on a small machine is CPU time the encoder does not get.

4. Prints a table and writes a JSON file with the results and the machine's facts
   (cores, RAM, versions, date; no host name).

The source iterator reads the memmapped ``.npy`` and pickles by file path (the copy
reopens the memmap), so stock hdmf-zarr's ``number_of_jobs=N`` really can run in
parallel; every read appends ``pid thread-id`` to a side file so the run can show how
many processes / threads actually read data.

``--profile`` adds a breakdown of where the threads engine spends its time (read,
contiguous copy, codec, store, and the rest) and a cProfile of the serial engine.

Examples::

    python benchmarks/bench_write.py --quick
    python benchmarks/bench_write.py --cases ephys --configs stock-serial,threads --repeats 2
    python benchmarks/bench_write.py --gpu --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import math
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

# The data generators, the source iterator and the NWB files around the data live in the
# package, shared with `hdmf-zarr-parallel bench`.
from hdmf_zarr_parallel.tools.bench import writer_label
from hdmf_zarr_parallel.tools.bench_data import (
    EPHYS_RATE,  # noqa: F401 - kept importable from here
    IMAGING_RATE,  # noqa: F401
    ephys_case,
    generate_ephys,  # noqa: F401 - benchmarks/bench_gpu_layouts.py imports it from here
    imaging_case,
)
from hdmf_zarr_parallel.tools.bench_data import BenchCase as Case
from hdmf_zarr_parallel.tools.examples import NpyMemmapIterator  # noqa: F401 - likewise

REPO = Path(__file__).resolve().parent.parent
STOCK_CONFIGS = ("stock-serial", "stock-jobs")
OUR_CONFIGS = ("serial", "threads", "processes", "auto")
ALL_CONFIGS = STOCK_CONFIGS + OUR_CONFIGS + ("gpu", "dask")
_DASK: dict = {}  # the LocalCluster client of the ``dask`` config, started on first use


def _dask_client(workers: int):
    if "client" not in _DASK:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        _DASK["client"] = Client(cluster)
    return _DASK["client"]


# --------------------------------------------------------------------------------------
# Cases: the data, its chunking and the NWB file around it
# --------------------------------------------------------------------------------------
def make_cases(args, workdir: Path) -> list[Case]:
    say = lambda line: print(f"[data] {line.strip()}")  # noqa: E731
    cases = []
    for name in args.cases:
        if name == "ephys":
            npy = workdir / f"ephys-{args.ephys_gb:g}GB-seed{args.seed}.npy"
            cases.append(ephys_case(npy, args.ephys_gb * 1e9, args.buffer_mb, args.seed, say))
        elif name == "imaging":
            npy = workdir / f"imaging-{args.imaging_gb:g}GB-seed{args.seed}.npy"
            cases.append(imaging_case(npy, args.imaging_gb * 1e9, args.buffer_mb, args.seed, say))
        else:
            raise SystemExit(f"unknown case {name!r}; choose from ephys, imaging")
    return cases


# --------------------------------------------------------------------------------------
# The ceiling: encode-only throughput of the array's own codec chain
# --------------------------------------------------------------------------------------
def _reference_array(case: Case, store=None):
    import zarr
    from zarr.storage import MemoryStore

    return zarr.create_array(
        store=MemoryStore() if store is None else store, shape=case.shape, chunks=case.chunks, dtype=case.dtype
    )


def _chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    import itertools

    for start in itertools.product(*(range(0, s, c) for s, c in zip(shape, chunks, strict=True))):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(start, chunks, shape, strict=True))


class Ceiling:
    """Encode-only throughput of the array's own codec chain over chunks already in memory.

    The chunks are cut from the source and made contiguous (padded at the edges) once,
    untimed; only ``encode`` over all of them, in a thread pool, is timed. Measured
    before and after the writes of a case, the best of all tries is the ceiling (the
    machine may be shared: the best try is the least disturbed one, as for the writes).

    A second ceiling also stores each encoded chunk as a file under ``store_dir`` (zarr's
    LocalStore, as the writes do): encode + store, still with no iterator, no chunk copy
    and no NWB. The gap between the two is what the filesystem costs.
    """

    def __init__(self, case: Case, workers: int, store_dir: Path) -> None:
        from hdmf_zarr_parallel.cpu.unit import ZarrUnitEncoder

        self.case = case
        self.workers = workers
        self.store_dir = store_dir
        self.array = _reference_array(case)
        self.encoder = ZarrUnitEncoder(self.array)
        src = np.load(case.npy, mmap_mode="r")
        slices = list(_chunk_slices(case.shape, case.chunks))
        self.coords = [tuple(s.start // c for s, c in zip(sl, case.chunks, strict=True)) for sl in slices]
        self.chunks = [self.encoder.pad(np.ascontiguousarray(src[s])) for s in slices]
        self.raw = sum(c.nbytes for c in self.chunks)
        self.stored = sum(len(e) for e in map(self.encoder.encode, self.chunks) if e is not None)  # also a warm-up
        self.tries: dict[int, list[float]] = {workers: [], 1: []}
        self.store_tries: list[float] = []

    def measure(self, repeats: int, single_thread: bool = True) -> None:
        for n in {self.workers, 1} if single_thread else {self.workers}:
            for _ in range(repeats):
                with ThreadPoolExecutor(n) as pool:
                    t0 = time.perf_counter()
                    for _ in pool.map(self.encoder.encode, self.chunks):
                        pass
                    self.tries[n].append(time.perf_counter() - t0)
        for _ in range(repeats):
            self.store_tries.append(self._encode_and_store_once())

    def _encode_and_store_once(self) -> float:
        from zarr.storage import LocalStore

        from hdmf_zarr_parallel.write.sink import make_sink

        target = self.store_dir / "ceiling-store.zarr"
        _release(target)
        sink = make_sink(_reference_array(self.case, LocalStore(target)))

        def encode_and_store(i: int) -> None:
            sink.put(self.coords[i], self.encoder.encode(self.chunks[i]))

        try:
            with ThreadPoolExecutor(self.workers) as pool:
                t0 = time.perf_counter()
                for _ in pool.map(encode_and_store, range(len(self.chunks))):
                    pass
                return time.perf_counter() - t0
        finally:
            _release(target)

    def release(self) -> None:
        self.chunks = []

    @property
    def MBps(self) -> float:
        return self.case.nbytes / min(self.tries[self.workers]) / 1e6

    def as_dict(self) -> dict:
        best = min(self.tries[self.workers])
        one = min(self.tries[1]) if self.tries[1] else None
        stored = min(self.store_tries)
        return {
            "codecs": [c.to_dict() for c in self.array.metadata.codecs],
            "chunks": list(self.case.chunks),
            "raw_bytes": self.raw,
            "encoded_bytes": self.stored,
            "compression_ratio_raw_over_stored": self.raw / self.stored,
            "workers": self.workers,
            "best_s": best,
            "all_s": self.tries[self.workers],
            "MBps": self.case.nbytes / best / 1e6,
            "single_thread_best_s": one,
            "single_thread_MBps": self.case.nbytes / one / 1e6 if one else None,
            "with_store_best_s": stored,
            "with_store_all_s": self.store_tries,
            "with_store_MBps": self.case.nbytes / stored / 1e6,
        }


# --------------------------------------------------------------------------------------
# One write
# --------------------------------------------------------------------------------------
@dataclass
class WriteResult:
    wall_s: float
    cpu_s: float
    stored_bytes: int
    pids: int
    threads: int
    main_pid_read: bool
    engine: str | None = None
    peak_inflight_bytes: int | None = None
    extra: dict = field(default_factory=dict)


def _cpu_seconds() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")


def write_once(case: Case, config: str, out: Path, workers: int, pid_log: Path) -> WriteResult:
    from hdmf_zarr.nwb import NWBZarrIO

    from hdmf_zarr_parallel import NWBParallelZarrIO

    if pid_log.exists():
        pid_log.unlink()
    nwb = case.build(case.iterator(str(pid_log)))
    report = None
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    if config in STOCK_CONFIGS:
        with NWBZarrIO(str(out), mode="w") as nwbio:
            nwbio.write(nwb, number_of_jobs=workers if config == "stock-jobs" else 1)
    elif config == "dask":
        client = _dask_client(workers)
        cpu0, t0 = _cpu_seconds(), time.perf_counter()  # the cluster's start-up is not timed
        with NWBParallelZarrIO(str(out), mode="w", engine="dask", client=client) as nwbio:
            nwbio.write(nwb)
            report = nwbio.last_write_report
    else:
        engine = config
        with NWBParallelZarrIO(str(out), mode="w", engine=engine, max_workers=workers) as nwbio:
            nwbio.write(nwb)
            report = nwbio.last_write_report
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    readers = [line.split() for line in pid_log.read_text().splitlines()] if pid_log.exists() else []
    return WriteResult(
        wall_s=wall,
        cpu_s=cpu,
        stored_bytes=_dir_bytes(out / case.data_path),
        pids=len({p for p, _ in readers}),
        threads=len(set(map(tuple, readers))),
        main_pid_read=any(int(p) == os.getpid() for p, _ in readers),
        engine=getattr(report, "engine", None),
        peak_inflight_bytes=getattr(report, "peak_inflight_bytes", None),
    )


def verify(case: Case, out: Path) -> None:
    """Read the written file back with stock NWBZarrIO and compare with the source exactly."""
    from hdmf_zarr.nwb import NWBZarrIO

    src = np.load(case.npy, mmap_mode="r")
    with NWBZarrIO(str(out), mode="r") as nwbio:
        nwb = nwbio.read()
        data = nwb.acquisition[case.series].data
        if tuple(data.shape) != case.shape or np.dtype(data.dtype) != case.dtype:
            raise AssertionError(f"read back {data.shape} {data.dtype}, expected {case.shape} {case.dtype}")
        if tuple(data.chunks) != case.chunks:
            raise AssertionError(f"chunks {data.chunks}, expected {case.chunks}")
        step = case.buffer_shape[0]
        for r0 in range(0, case.shape[0], step):
            if not np.array_equal(data[r0 : r0 + step], src[r0 : r0 + step]):
                raise AssertionError(f"data differ in rows {r0}:{r0 + step}")


def stored_codecs(case: Case, out: Path) -> list[dict]:
    import zarr

    return [c.to_dict() for c in zarr.open_array(str(out / case.data_path), mode="r").metadata.codecs]


def _release(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # so one write's dirty pages are not flushed during the next one


# --------------------------------------------------------------------------------------
# Profile of the threads engine
# --------------------------------------------------------------------------------------
class _StageClock:
    """Sums per-stage time over all threads by wrapping the stage methods for one write."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.patches: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                d = time.perf_counter() - t0
                with self.lock:
                    self.totals[stage] = self.totals.get(stage, 0.0) + d
                    self.counts[stage] = self.counts.get(stage, 0) + 1

        self.patches.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self.patches):
            setattr(owner, name, original)
        self.patches.clear()


def profile_threads(case: Case, workdir: Path, workers: int) -> dict:
    """Where one threads-engine write spends its time: per-stage thread-seconds, and the phases of the write."""
    from hdmf_zarr_parallel import cpu  # noqa: F401
    from hdmf_zarr_parallel.write import pipeline, queue, sink, source  # noqa: F401

    clock = _StageClock()
    clock.wrap(source.DatasetSource, "read", "read (iterator, memmap -> RAM)")
    clock.wrap(cpu.unit.ZarrUnitEncoder, "pad", "contiguous copy / pad of a chunk")
    clock.wrap(cpu.unit.ZarrUnitEncoder, "encode", "_encode_total")
    clock.wrap(sink.LocalFileSink, "put_many", "store (write chunk files)")
    # the pipeline runs from the first dataset hdmf-zarr queues until the queue is exhausted
    started: list[float] = []
    original_add = pipeline.PipelineRun.add

    def add(self, *args, **kwargs):
        started.append(time.perf_counter())
        return original_add(self, *args, **kwargs)

    clock.patches.append((pipeline.PipelineRun, "add", original_add))
    pipeline.PipelineRun.add = add
    clock.wrap(queue.ParallelDataChunkIteratorQueue, "exhaust_queue", "_exhaust")
    out = workdir / f"out-{case.name}-profile"
    shutil.rmtree(out, ignore_errors=True)
    try:
        res = write_once(case, "threads", out, workers, workdir / "pids-profile.log")
        finished = time.perf_counter()
    finally:
        clock.restore()
        _release(out)
    t = dict(clock.totals)
    encode_total = t.pop("_encode_total", 0.0)
    t.pop("_exhaust", None)
    pipeline_wall = finished - min(started) if started else 0.0
    copy = t.get("contiguous copy / pad of a chunk", 0.0)
    t["codec (zstd, zarr codec chain)"] = encode_total - copy
    busy = sum(t.values())
    capacity = pipeline_wall * workers
    stages = {k: {"thread_s": v, "share_of_worker_capacity": v / capacity if capacity else None} for k, v in t.items()}
    stages["idle / scheduling / python overhead"] = {
        "thread_s": capacity - busy,
        "share_of_worker_capacity": (capacity - busy) / capacity if capacity else None,
    }
    return {
        "wall_s": res.wall_s,
        "cpu_s": res.cpu_s,
        "pipeline_wall_s": pipeline_wall,
        "outside_pipeline_s": res.wall_s - pipeline_wall,
        "workers": workers,
        "stages": stages,
        "counts": clock.counts,
    }


def profile_serial_cprofile(case: Case, workdir: Path, top: int = 14) -> str:
    """cProfile of one serial-engine write (all work in the calling thread): the top functions by own time."""
    out = workdir / f"out-{case.name}-cprofile"
    shutil.rmtree(out, ignore_errors=True)
    prof = cProfile.Profile()
    try:
        prof.enable()
        write_once(case, "serial", out, 1, workdir / "pids-cprofile.log")
        prof.disable()
    finally:
        _release(out)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# Machine facts, output
# --------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def save_json(output: Path, result: dict) -> None:
    """Write a benchmark's result where asked (parents created) and say where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"[json] {output}")


def machine_facts(workers: int) -> dict:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu_model": cpu_model,
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "workers": workers,
        "ram_bytes": ram,
        "python": platform.python_version(),
        "versions": {
            d: _version(d) for d in ("numpy", "zarr", "numcodecs", "hdmf", "hdmf-zarr", "pynwb", "hdmf-zarr-parallel")
        },
    }


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``, …), from ``/proc/mounts``.

    Recorded because on a small machine the store's filesystem is a visible part of a write:
    the kernel's work to create and fill each chunk file runs on the same cores as the encoder.
    """
    best, kind = "", None
    with contextlib.suppress(OSError):
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def _paired_median(stock: list[WriteResult] | None, runs: list[WriteResult]) -> float | None:
    """Median over repetitions of stock serial's time / this configuration's time in the same
    repetition. The repetitions are interleaved, so each pair ran on the machine in the same
    state: steadier than best against best when the machine drifts during a run."""
    if not stock or len(stock) != len(runs):
        return None
    return statistics.median(s.wall_s / r.wall_s for s, r in zip(stock, runs, strict=True))


def _fmt_table(rows: list[dict]) -> str:
    head = [
        "case",
        "config",
        "best s",
        "median s",
        "MB/s",
        "x stock serial",
        "paired",
        "% ceiling",
        "% enc+store",
        "stored/raw",
        "cores busy",
        "min cpu s",
        "readers",
    ]
    lines = [head]
    for r in rows:
        if r.get("skipped"):
            lines.append([r["case"], r["label"], *["-"] * 10, "skipped: " + r["skipped"][:60]])
            continue
        lines.append(
            [
                r["case"],
                r["label"],
                f"{r['best_s']:.2f}",
                f"{r['median_s']:.2f}",
                f"{r['MBps']:.0f}",
                f"{r['x_stock_serial']:.2f}" if r.get("x_stock_serial") else "-",
                f"{r['x_stock_serial_paired_median']:.2f}" if r.get("x_stock_serial_paired_median") else "-",
                f"{100 * r['fraction_of_ceiling']:.0f}%" if r.get("fraction_of_ceiling") else "-",
                f"{100 * r['fraction_of_store_ceiling']:.0f}%" if r.get("fraction_of_store_ceiling") else "-",
                f"{r['stored_over_raw']:.3f}",
                f"{r['cores_busy']:.2f}",
                f"{r['min_cpu_s']:.1f}",
                r["readers"],
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _readers(config: str, res: WriteResult) -> str:
    if config in ("stock-jobs", "processes") or res.pids > 1 or not res.main_pid_read:
        other = res.pids - (1 if res.main_pid_read else 0)
        return f"{other} worker proc" + ("" if other == 1 else "s") + (" + main" if res.main_pid_read else "")
    return f"{res.threads} thread" + ("" if res.threads == 1 else "s")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the source .npy files and outputs go (default: a new temp dir, deleted at the end)",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the generated .npy files (reused when present)")
    p.add_argument("--ephys-gb", type=float, default=1.0, help="size of the ephys recording in GB (1e9 bytes)")
    p.add_argument("--imaging-gb", type=float, default=0.5, help="size of the imaging recording in GB")
    p.add_argument("--buffer-mb", type=int, default=96, help="iterator buffer size in MiB (whole chunks)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each configuration")
    p.add_argument("--workers", type=int, default=None, help="N for the parallel configurations (default: all cores)")
    p.add_argument("--cases", default="ephys,imaging", help="comma-separated: ephys, imaging")
    p.add_argument(
        "--configs",
        default=",".join(STOCK_CONFIGS + OUR_CONFIGS),
        help=f"comma-separated, from: {', '.join(ALL_CONFIGS)}",
    )
    p.add_argument("--gpu", action="store_true", help="also run engine='gpu' (skipped with the reason if unusable)")
    p.add_argument("--quick", action="store_true", help="smoke test: ~100 MB datasets, 1 repeat, 24 MiB buffers")
    p.add_argument("--profile", action="store_true", help="break down where the threads engine spends its time")
    p.add_argument("--no-verify", action="store_true", help="skip reading back and comparing each configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/cpu-<cores>c-<date>.json; gpu-... with --gpu)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ephys_gb = min(args.ephys_gb, 0.1)
        args.imaging_gb = min(args.imaging_gb, 0.08)
        args.repeats = 1
        args.buffer_mb = min(args.buffer_mb, 24)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in ALL_CONFIGS:
            p.error(f"unknown config {c!r}; choose from {', '.join(ALL_CONFIGS)}")
    if args.gpu and "gpu" not in args.configs:
        args.configs.append("gpu")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workers = args.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hzp-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(workers)
    print(
        f"[machine] {facts['cpu_model']}, {facts['cores_usable']} usable cores, "
        f"{(facts['ram_bytes'] or 0) / 2**30:.0f} GiB RAM, Python {facts['python']}, "
        + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    )
    fstype = filesystem_of(workdir)
    print(
        f"[run] workdir {workdir} ({fstype or 'filesystem unknown'}); workers N={workers}; "
        f"repeats {args.repeats}; configs {','.join(args.configs)}"
    )
    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
    warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
    results: dict = {
        "machine": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workdir_filesystem": fstype,
        "cases": {},
    }
    rows: list[dict] = []
    try:
        for case in make_cases(args, workdir):
            rows.extend(run_case(case, args, workers, workdir, results))
    finally:
        if "client" in _DASK:
            _DASK.pop("client").shutdown()
        if own_workdir and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for p in workdir.glob("out-*"):
                shutil.rmtree(p, ignore_errors=True)
    table = _fmt_table(rows)
    print()
    print(table)
    results["rows"] = rows
    results["table_markdown"] = table
    output = args.output
    if output is None:
        tag = "gpu" if "gpu" in args.configs else "cpu"
        quick = "-quick" if args.quick else ""
        output = (
            REPO / "benchmarks" / "results" / f"{tag}-{facts['cores_usable']}c{quick}-{dt.date.today():%Y%m%d}.json"
        )
    print()
    save_json(output, results)
    return 0


def run_case(case: Case, args, workers: int, workdir: Path, results: dict) -> list[dict]:
    print(
        f"\n=== {case.name}: {case.shape} {case.dtype}, {case.nbytes / 1e9:.3f} GB, chunks {case.chunks} "
        f"({math.prod(case.chunks) * case.dtype.itemsize / 2**20:.2f} MiB), iterator buffer {case.buffer_shape} "
        f"({math.prod(case.buffer_shape) * case.dtype.itemsize / 2**20:.0f} MiB)"
    )
    ceil = Ceiling(case, workers, store_dir=workdir)
    ceil.measure(max(2, min(args.repeats, 3)))
    ceiling = ceil.as_dict()
    ratio = ceiling["compression_ratio_raw_over_stored"]
    flag = "" if 1.45 <= ratio <= 2.1 else "  (outside the intended 1.5-2!)"
    print(
        f"[source] zarr default codecs {[c['name'] for c in ceiling['codecs']]}: compression ratio raw/stored "
        f"{ratio:.2f}{flag}"
    )
    print(
        f"[ceiling] encode-only, {workers} threads over in-memory chunks: {ceiling['MBps']:.0f} MB/s "
        f"(1 thread: {ceiling['single_thread_MBps']:.0f} MB/s); encode + store into {workdir} "
        f"({results['workdir_filesystem'] or 'filesystem unknown'}): {ceiling['with_store_MBps']:.0f} MB/s"
    )
    case_result = {
        "shape": list(case.shape),
        "dtype": str(case.dtype),
        "raw_bytes": case.nbytes,
        "chunks": list(case.chunks),
        "buffer_shape": list(case.buffer_shape),
        "ceiling": ceiling,
        "configs": {},
    }
    results["cases"][case.name] = case_result
    times: dict[str, list[WriteResult]] = {}
    skipped: dict[str, str] = {}
    verified: set[str] = set()
    for rep in range(args.repeats):
        for config in args.configs:
            if config in skipped:
                continue
            out = workdir / f"out-{case.name}-{config}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                res = write_once(case, config, out, workers, workdir / f"pids-{case.name}-{config}.log")
            except Exception as exc:  # e.g. engine="gpu" without a GPU: say why, skip the rows
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                print(f"[skip] {case.name} {config}: {reason}")
                if os.environ.get("BENCH_TRACEBACK"):
                    traceback.print_exc()
                skipped[config] = reason
                _release(out)
                continue
            extra = ""
            if config not in verified:
                if config != "stock-serial" and case.name in results["cases"]:
                    codecs_here = stored_codecs(case, out)
                    if codecs_here != ceiling["codecs"]:
                        print(f"[warn] {config} stored codecs {codecs_here} differ from the ceiling's")
                if not args.no_verify:
                    t0 = time.perf_counter()
                    verify(case, out)
                    extra = f"; verified bit-exact with stock NWBZarrIO ({time.perf_counter() - t0:.1f} s)"
                verified.add(config)
            _release(out)
            times.setdefault(config, []).append(res)
            print(
                f"[write] {case.name} {config:13s} rep {rep + 1}: {res.wall_s:6.2f} s  "
                f"{case.nbytes / res.wall_s / 1e6:6.0f} MB/s  cpu {res.cpu_s:6.1f} s  readers: "
                f"{_readers(config, res)}" + (f"  engine: {res.engine}" if res.engine else "") + extra
            )
    ceil.measure(2, single_thread=False)
    ceil.release()
    case_result["ceiling"] = ceiling = ceil.as_dict()
    print(
        f"[ceiling] re-measured after the writes; best of all tries: {ceiling['MBps']:.0f} MB/s, "
        f"with the store {ceiling['with_store_MBps']:.0f} MB/s"
    )
    rows = []
    base = None
    if "stock-serial" in times:
        base = min(r.wall_s for r in times["stock-serial"])
    for config in args.configs:
        if config in skipped:
            rows.append(
                {
                    "case": case.name,
                    "config": config,
                    "label": writer_label(config, workers),
                    "skipped": skipped[config],
                }
            )
            case_result["configs"][config] = {"skipped": skipped[config]}
            continue
        runs = times.get(config)
        if not runs:
            continue
        best = min(runs, key=lambda r: r.wall_s)
        walls = [r.wall_s for r in runs]
        row = {
            "case": case.name,
            "config": config,
            "label": writer_label(config, workers),
            "best_s": best.wall_s,
            "median_s": statistics.median(walls),
            "all_s": walls,
            "MBps": case.nbytes / best.wall_s / 1e6,
            "x_stock_serial": (base / best.wall_s) if base else None,
            "x_stock_serial_paired_median": _paired_median(times.get("stock-serial"), runs),
            "fraction_of_ceiling": (case.nbytes / best.wall_s / 1e6) / ceiling["MBps"],
            "fraction_of_store_ceiling": (case.nbytes / best.wall_s / 1e6) / ceiling["with_store_MBps"],
            "stored_bytes": best.stored_bytes,
            "stored_over_raw": best.stored_bytes / case.nbytes,
            "cores_busy": best.cpu_s / best.wall_s,
            "cpu_s": best.cpu_s,
            "min_cpu_s": min(r.cpu_s for r in runs),
            "all_cpu_s": [r.cpu_s for r in runs],
            "readers": _readers(config, best),
            "reader_processes": best.pids,
            "reader_threads": best.threads,
            "engine": best.engine,
            "peak_inflight_bytes": best.peak_inflight_bytes,
            "verified": config in verified and not args.no_verify,
        }
        rows.append(row)
        case_result["configs"][config] = row
    if "stock-jobs" in times:
        r = min(times["stock-jobs"], key=lambda r: r.wall_s)
        parallel = r.pids - (1 if r.main_pid_read else 0)
        print(
            f"[check] stock number_of_jobs={workers}: data read in {parallel} worker process(es) "
            f"{'(the process pool was used)' if parallel >= 2 else '(NOT parallel!)'}"
        )
    if args.profile:
        case_result["profile_threads"] = prof = profile_threads(case, workdir, workers)
        print(
            f"\n[profile] threads engine, {case.name}: wall {prof['wall_s']:.2f} s = pipeline "
            f"{prof['pipeline_wall_s']:.2f} s + outside the pipeline (NWB objects, metadata, open/close) "
            f"{prof['outside_pipeline_s']:.2f} s; cpu {prof['cpu_s']:.1f} s"
        )
        print(f"[profile] thread-seconds per stage over {workers} workers x {prof['pipeline_wall_s']:.2f} s:")
        for stage, v in prof["stages"].items():
            print(f"           {stage:40s} {v['thread_s']:7.2f} s  {100 * (v['share_of_worker_capacity'] or 0):5.1f}%")
        text = profile_serial_cprofile(case, workdir)
        case_result["cprofile_serial_top"] = text
        print(f"\n[profile] cProfile of one serial-engine write ({case.name}), top functions by own time:")
        print("\n".join(line for line in text.splitlines() if line.strip())[:6000])
    return rows


if __name__ == "__main__":
    sys.exit(main())
