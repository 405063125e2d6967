"""Does a write keep its speed and its memory as it grows? Throughput and peak RSS against size.

Writes the benchmark ephys NWB recording (int16, 384 channels, ~1 MiB chunks, zstd; see
``hdmf_zarr_parallel.tools.bench_data``) at each size in ``--gb``, with each configuration,
each write in a fresh child process so that its peak resident memory (``ru_maxrss``) is its
own. Memory is peak *anonymous* resident memory (``RssAnon``, sampled every 20 ms): the
pages of the memory-mapped source that a read touches are file-backed and count in
``ru_maxrss`` (reported too) however little the writer holds. The source ``.npy`` of each size is generated once and kept in the page cache (warmed
before each write), so what changes with size is the writer, not the disk reads.

Prints, per configuration: MB/s at each size, the ratio of each size's throughput to the
smallest size's (1.00 = no slow-down), and peak anonymous RSS in MiB at each size.

    python benchmarks/bench_scale.py --gb 1,5 --configs stock-serial,threads --workdir /tmp/scale

``threads-native`` is ``threads`` with the ``native`` extra's block writer compiled in the
child before its write (as :func:`hdmf_zarr_parallel.cpu.native.prepare` does at a program's start).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

CONFIGS = ("stock-serial", "serial", "threads", "threads-native", "processes")


def child(npy: str, gb: float, config: str, out: str, workers: int, buffer_mb: int) -> dict:
    """One write in this process: wall seconds, MB/s, peak RSS."""
    from hdmf_zarr.nwb import NWBZarrIO

    from hdmf_zarr_parallel import NWBParallelZarrIO
    from hdmf_zarr_parallel.tools.bench_data import ephys_case

    case = ephys_case(Path(npy), gb * 1e9, buffer_mb, 0, lambda text: None)
    _warm(Path(npy))
    if config.endswith("-native"):  # the native block writer, compiled before the clock starts (cpu/native.py)
        from hdmf_zarr_parallel.cpu.native import prepare

        if not prepare():
            raise SystemExit("threads-native needs the native extra (numba)")
        config = config.removesuffix("-native")
    nwb = case.build(case.iterator())
    peak = AnonPeak()
    start = time.perf_counter()
    if config == "stock-serial":
        with NWBZarrIO(out, mode="w") as io:
            io.write(nwb)
    else:
        with NWBParallelZarrIO(out, mode="w", engine=config, max_workers=workers) as io:
            io.write(nwb)
    wall = time.perf_counter() - start
    anon_mib = peak.stop() / 1024
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "wall_s": wall,
        "mb_per_s": case.nbytes / wall / 1e6,
        "peak_anon_rss_mib": anon_mib,
        "maxrss_mib": maxrss_mib,
        "bytes": case.nbytes,
    }


class AnonPeak:
    """The largest ``RssAnon`` of this process while it runs (Linux ``/proc/self/status``), in KiB."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.peak = _anon_kib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._done.wait(every_s):
            self.peak = max(self.peak, _anon_kib())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, _anon_kib())


def _anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _warm(npy: Path) -> None:
    """Read the source once so that every write finds it in the page cache."""
    with open(npy, "rb") as f:
        while f.read(64 << 20):
            pass


def _check(npy: Path, out: Path) -> None:
    """The written data equals the source (read back with stock zarr-python)."""
    import zarr

    written = zarr.open_array(str(out / "acquisition/ElectricalSeries/data"), mode="r")
    source = np.load(npy, mmap_mode="r")
    step = 1 << 20
    for start in range(0, source.shape[0], step):
        if not np.array_equal(written[start : start + step], source[start : start + step]):
            raise AssertionError(f"{out}: rows {start}.. differ from the source")


def run(args: argparse.Namespace) -> dict:
    from hdmf_zarr_parallel.tools.bench_data import ephys_case

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hzp-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.gb.split(",")]
    configs = args.configs.split(",")
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    workers = args.workers or len(os.sched_getaffinity(0))
    runs: dict[str, dict[float, list[dict]]] = {c: {s: [] for s in sizes} for c in configs}
    try:
        for gb in sizes:
            npy = workdir / f"ephys-{gb:g}GB-seed0.npy"
            ephys_case(npy, gb * 1e9, args.buffer_mb, 0, print)
            for rep in range(args.repeats):
                for config in configs:  # interleaved, so that drift in the machine's load hits all alike
                    out = workdir / f"out-{config}-{gb:g}.nwb.zarr"
                    shutil.rmtree(out, ignore_errors=True)
                    argv = [sys.executable, __file__, "--child", str(npy), str(gb), config, str(out)]
                    argv += [str(workers), str(args.buffer_mb)]
                    done = subprocess.run(argv, check=True, capture_output=True, text=True)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    if rep == 0 and not args.no_verify:
                        _check(npy, out)
                    shutil.rmtree(out, ignore_errors=True)
                    runs[config][gb].append(result)
                    print(
                        f"  {gb:g} GB {config:13s} #{rep + 1}: {result['mb_per_s']:7.1f} MB/s, "
                        f"peak anon RSS {result['peak_anon_rss_mib']:.0f} MiB (maxrss {result['maxrss_mib']:.0f})",
                        flush=True,
                    )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"sizes_gb": sizes, "workers": workers, "runs": runs}


def summarize(result: dict) -> list[dict]:
    rows = []
    smallest = result["sizes_gb"][0]
    for config, by_size in result["runs"].items():
        base = statistics.median(r["mb_per_s"] for r in by_size[smallest])
        for gb, runs in by_size.items():
            mbps = statistics.median(r["mb_per_s"] for r in runs)
            rows.append(
                {
                    "config": config,
                    "gb": gb,
                    "mb_per_s": round(mbps, 1),
                    "vs_smallest": round(mbps / base, 3),
                    "peak_anon_rss_mib": round(max(r["peak_anon_rss_mib"] for r in runs)),
                    "maxrss_mib": round(max(r["maxrss_mib"] for r in runs)),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        npy, gb, config, out, workers, buffer_mb = argv[1:]
        print(json.dumps(child(npy, float(gb), config, out, int(workers), int(buffer_mb))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", default="1,5", help="comma-separated sizes in GB (1e9 bytes), smallest first")
    parser.add_argument("--configs", default="stock-serial,threads", help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="default: every usable core")
    parser.add_argument("--buffer-mb", type=int, default=64, help="iterator buffer (whole chunk rows)")
    parser.add_argument("--workdir", default=None, help="data and outputs (default: a temporary folder, deleted)")
    parser.add_argument(
        "--no-verify", action="store_true", help="do not compare the first write of each with the source"
    )
    parser.add_argument("--output", default=None, help="JSON (default: benchmarks/results/scale-<cores>c-<date>.json)")
    args = parser.parse_args(argv)
    result = run(args)
    rows = summarize(result)
    print(f"\n{'config':14s} {'GB':>5s} {'MB/s':>8s} {'vs smallest':>12s} {'anon RSS MiB':>13s} {'maxrss MiB':>11s}")
    for row in rows:
        print(
            f"{row['config']:14s} {row['gb']:5g} {row['mb_per_s']:8.1f} {row['vs_smallest']:12.3f} "
            f"{row['peak_anon_rss_mib']:13d} {row['maxrss_mib']:11d}"
        )
    output = Path(args.output or Path(__file__).parent / "results" / f"scale-{result['workers']}c-{date.today()}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"rows": rows, **result}, indent=1))
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
