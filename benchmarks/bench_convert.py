"""NWB HDF5 -> NWB Zarr conversion: stock hdmf-zarr export vs ``hdmf_zarr_parallel.tools.convert``.

The source is what NWB conversion tools usually write: the example file of
``demo.write_example_hdf5`` (384-channel int16 ephys, LFP, a two-photon movie, units) with
its large arrays in ~1 MiB HDF5 chunks, shuffled and gzip-compressed (``--uncompressed``:
contiguous and unfiltered, as PyNWB writes plain arrays). Each configuration
converts it into a fresh store, interleaved with the others, ``--repeats`` times:

- ``stock-export``: ``NWBZarrIO.export(src_io=NWBHDF5IO(src), write_args={"link_data": False})``;
- ``threads``: ``convert(engine="threads")`` with the same codecs as stock (gzip + shuffle);
- ``threads-h5py``: the same, but reading through ``h5py.Dataset[...]`` (decompression
  serialised by h5py's lock), to measure what ``h5direct`` (workers reading outside that
  lock) brings in the same run;
- ``threads-zstd``: ``convert(engine="threads", codec="zstd")``;
- ``gpu``: ``convert(engine="gpu")`` with the same codecs as stock, where a GPU is usable;
- ``ENGINE/LAYOUT`` (``threads/gpu-shards``, ``gpu/gpu-blosc``, ...): ``convert(engine=ENGINE,
  layout=LAYOUT)``, a ``--layout`` preset of ``tools/convert_presets.py``.

Configs on the gpu engine are skipped, with the reason, where no GPU is usable.

The first conversion of each configuration is compared with the source (``compare_nwb_files``).
Prints a table (seconds, MB/s of uncompressed array data, ratio to stock) and writes JSON.

    python benchmarks/bench_convert.py --seconds 20 --repeats 3 --output /tmp/convert.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_write import _cpu_seconds, machine_facts, save_json  # noqa: E402
from gpu_facts import gpu_facts  # noqa: E402

from hdmf_zarr_parallel.tools import h5direct  # noqa: E402
from hdmf_zarr_parallel.tools.convert import ConvertOptions, convert  # noqa: E402
from hdmf_zarr_parallel.tools.convert_presets import PRESETS  # noqa: E402
from hdmf_zarr_parallel.tools.examples import write_example_hdf5  # noqa: E402
from hdmf_zarr_parallel.tools.verify import compare_nwb_files  # noqa: E402

CONFIGS = (
    "stock-export",
    "threads",
    "threads-h5py",
    "threads-zstd",
    "gpu",
    *(f"{engine}/{layout}" for engine in ("threads", "gpu") for layout in PRESETS),
)


def array_bytes(source: Path) -> int:
    """Uncompressed bytes of every numeric dataset in the source: the work of a conversion."""
    import h5py

    total = 0

    def visit(_name: str, obj) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
            total += obj.size * obj.dtype.itemsize

    with h5py.File(source, "r") as f:
        f.visititems(visit)
    return total


@contextlib.contextmanager
def reading_through_h5py():
    """Every HDF5 read goes through ``h5py.Dataset[...]`` (no direct reads)."""
    original = h5direct.direct_reader
    h5direct.direct_reader = lambda dataset: None
    try:
        yield
    finally:
        h5direct.direct_reader = original


def convert_once(config: str, source: Path, out: Path, workers: int) -> tuple[float, float]:
    """One conversion into ``out``; returns (wall seconds, CPU seconds of this process)."""
    from hdmf_zarr.nwb import NWBZarrIO
    from pynwb import NWBHDF5IO

    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if config == "stock-export":
            with NWBHDF5IO(str(source), mode="r") as src_io, NWBZarrIO(str(out), mode="w") as io:
                io.export(src_io=src_io, write_args={"link_data": False})
        else:
            engine, _, layout = config.partition("/")
            engine = "gpu" if engine == "gpu" else "threads"
            codec = "zstd" if config == "threads-zstd" else None
            options = ConvertOptions(engine=engine, workers=workers, codec=codec, layout=layout or "keep")
            with reading_through_h5py() if config == "threads-h5py" else contextlib.nullcontext():
                convert(source, out, options)
    return time.perf_counter() - t0, _cpu_seconds() - cpu0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-bench-convert"), help="source and outputs (kept)")
    p.add_argument("--seconds", type=float, default=20.0, help="recording length of the example file (default 20)")
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--uncompressed", action="store_true", help="a contiguous, unfiltered source instead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    p.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "gpu"), help=f"from {', '.join(CONFIGS)}")
    p.add_argument("--output", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs: {sorted(unknown)}")
    workers = args.workers or len(os.sched_getaffinity(0))
    args.workdir.mkdir(parents=True, exist_ok=True)
    kind = "plain" if args.uncompressed else "gzip"
    source = args.workdir / f"example-{kind}-{args.seconds:g}s-{args.channels}ch.nwb"
    if not source.exists():
        print(f"[source] writing {source} ({kind}) ...", flush=True)
        write_example_hdf5(source, compressed=not args.uncompressed, seconds=args.seconds, channels=args.channels)
    nbytes = array_bytes(source)
    print(f"[source] {source.name}: {nbytes / 1e6:.0f} MB of arrays, {source.stat().st_size / 1e6:.0f} MB on disk")
    facts = gpu_facts()
    if not facts["available"] and (on_gpu := [c for c in configs if c.split("/")[0] == "gpu"]):
        print(f"[skip] {', '.join(on_gpu)}: {facts['reason']}")
        configs = [c for c in configs if c not in on_gpu]
    runs: dict[str, list[tuple[float, float]]] = {c: [] for c in configs}
    for repeat in range(args.repeats):
        for config in configs:
            out = args.workdir / f"out-{config.replace('/', '+')}.nwb.zarr"
            wall, cpu = convert_once(config, source, out, workers)
            runs[config].append((wall, cpu))
            note = ""
            if repeat == 0:
                problems = compare_nwb_files(source, out)
                if problems:
                    raise SystemExit(f"{config}: output differs from the source: {problems[:3]}")
                note = "; same content as the source"
            print(f"[convert] {config:13s} rep {repeat + 1}: {wall:6.2f} s  cpu {cpu:5.1f} s{note}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    stock_best = min(w for w, _ in runs["stock-export"]) if "stock-export" in runs else None
    threads_best = min(w for w, _ in runs["threads"]) if "threads" in runs else None
    rows = []
    for config, tries in runs.items():
        best = min(w for w, _ in tries)
        rows.append(
            {
                "config": config,
                "best_s": best,
                "median_s": statistics.median(w for w, _ in tries),
                "all_s": [w for w, _ in tries],
                "min_cpu_s": min(c for _, c in tries),
                "MBps": nbytes / best / 1e6,
                "x_stock_export": stock_best / best if stock_best else None,
                "x_threads": threads_best / best if threads_best else None,
            }
        )
    print("\n| config | best s | median s | MB/s | x stock export | x threads | min cpu s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        stock, threads = (f"{r[k]:.2f}" if r[k] else "-" for k in ("x_stock_export", "x_threads"))
        print(
            f"| {r['config']} | {r['best_s']:.2f} | {r['median_s']:.2f} | {r['MBps']:.0f} | {stock} | {threads} "
            f"| {r['min_cpu_s']:.1f} |"
        )
    result = {
        "machine": machine_facts(workers),
        "gpu": facts,
        "source": {"file": source.name, "array_bytes": nbytes, "file_bytes": source.stat().st_size},
        "repeats": args.repeats,
        "rows": rows,
    }
    save_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
