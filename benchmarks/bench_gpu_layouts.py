"""GPU engine vs CPU engines vs stock hdmf-zarr's own queue, per chunk layout.

nvCOMP compresses each zstd or gzip chunk as one frame, so it needs many frames: the sharded
layout (64 KiB inner chunks in multi-MiB shards) and Blosc (each chunk many blocks) suit it,
1 MiB or 10 MB zstd/gzip chunks do not. Writes the same ephys recording (1 GB, memmapped .npy,
GenericDataChunkIterator) into a zarr array with each layout of ``--layouts``, through stock
hdmf-zarr's ZarrIODataChunkIteratorQueue and through our pipeline with each config; prints
MB/s and ratios to stock and to ``threads``, writes JSON (machine and GPU facts included).

Layouts (``--layouts``, default ``1MiB,shard3MiB``): ``1MiB`` zstd (8192, 64) chunks;
``shard3MiB`` zstd 64 KiB inner chunks in 3 MiB shards; ``gzip10MB`` neuroconv's layout,
(57630, 85) chunks (9.8 MB) with gzip level 1; ``blosc4MiB`` Blosc-zstd (clevel 5, byte
shuffle) in (32768, 64) chunks. Configs: ``stock-queue``; ``threads``; ``gpu`` (engine="gpu"
with WriteOptions' defaults); ``gpu-lanes`` (``gpu_cpu_helpers=0``: GPU lanes only);
``gpu-host`` (engine="gpu" on HostLane: the GPU data path on the CPU, for machines without a
GPU). ``gpu`` and ``gpu-lanes`` are skipped, with the reason, where no GPU is usable.

    python benchmarks/bench_gpu_layouts.py --gb 0.05 --layouts 1MiB,gzip10MB,blosc4MiB,shard3MiB \
        --configs stock-queue,threads,gpu-host --repeats 1 --output /tmp/layouts.json   # a CPU self-test
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_write import NpyMemmapIterator, _StageClock, generate_ephys, machine_facts, save_json  # noqa: E402  # noqa: E402
from gpu_facts import gpu_facts  # noqa: E402
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue  # noqa: E402
from zarr.codecs import BloscCodec, GzipCodec  # noqa: E402

from hdmf_zarr_parallel.engines import make_engine  # noqa: E402
from hdmf_zarr_parallel.options import WriteOptions  # noqa: E402
from hdmf_zarr_parallel.write.dataset import DatasetWrite  # noqa: E402
from hdmf_zarr_parallel.write.pipeline import write_datasets  # noqa: E402
from hdmf_zarr_parallel.write.source import DatasetSource  # noqa: E402

# name: the array's geometry and codec (zarr.create_array keywords) and iterator buffers in units
LAYOUTS = {
    "chunks 1 MiB": {"chunks": (8192, 64), "shards": None},
    "shards 3 MiB / inner 64 KiB": {"chunks": (512, 64), "shards": (4096, 384)},
    "chunks 9.8 MB gzip-1 (neuroconv)": {"chunks": (57630, 85), "shards": None, "compressors": GzipCodec(level=1)},
    "chunks 4 MiB blosc-zstd": {
        "chunks": (32768, 64),
        "shards": None,
        "compressors": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
    },
}
KEYS = dict(zip(("1MiB", "shard3MiB", "gzip10MB", "blosc4MiB"), LAYOUTS, strict=True))  # --layouts names
DEFAULT_LAYOUTS = ("1MiB", "shard3MiB")
BUFFER_BYTES = 96 << 20  # iterator buffer: at most 12 units, about this many bytes, at least one unit
CONFIGS = ("stock-queue", "threads", "processes", "gpu", "gpu-lanes", "gpu-host")
DEVICE_CONFIGS = ("gpu", "gpu-lanes")


def write_layout(npy: Path, shape: tuple[int, ...], geometry: dict, config: str, out: Path, **options) -> float:
    """One write of the recording into a fresh array of ``geometry``; returns the seconds it took.
    ``options`` go to :class:`WriteOptions` (e.g. ``gpu_streams``)."""
    shutil.rmtree(out, ignore_errors=True)
    array = zarr.create_array(zarr.storage.LocalStore(out), shape=shape, dtype="int16", **geometry)
    unit = geometry["shards"] or geometry["chunks"]
    units = max(1, min(12, BUFFER_BYTES // (unit[0] * shape[1] * 2)))
    iterator = NpyMemmapIterator(
        str(npy),
        chunk_shape=(min(unit[0], shape[0]), min(unit[1], shape[1])),
        buffer_shape=(min(unit[0] * units, shape[0]), shape[1]),
    )
    t0 = time.perf_counter()
    if config == "stock-queue":
        queue = ZarrIODataChunkIteratorQueue()
        queue.append(array, iterator)
        queue.exhaust_queue()
    else:
        settings, engine = make_config(config, **options)
        write_datasets([DatasetWrite(array, iterator)], engine, settings)
    return time.perf_counter() - t0


def make_config(config: str, **options):
    """The WriteOptions and engine of one of our configs (:data:`CONFIGS` but stock-queue)."""
    if config == "gpu-lanes":
        options = {**options, "gpu_cpu_helpers": 0}
    settings = WriteOptions(engine="gpu" if config.startswith("gpu") else config, **options)
    if config != "gpu-host":
        return settings, make_engine(settings)
    from hdmf_zarr_parallel.gpu.engine import GpuEngine
    from hdmf_zarr_parallel.gpu.lanes import HostLane

    engine = GpuEngine(
        settings.workers,
        settings.gpu_batch_bytes,
        lanes=settings.gpu_streams,
        lane_factory=HostLane,
        cpu_helpers=settings.gpu_cpu_helpers,
    )
    return settings, engine


def profile_gpu(npy: Path, shape: tuple[int, ...], geometry: dict, out: Path) -> dict:
    """Thread-seconds per stage of one gpu-engine write: where the lanes and writers spend their time."""
    from hdmf_zarr_parallel.gpu import datapath as gpu
    from hdmf_zarr_parallel.gpu import lanes as gpu_lanes

    clock = _StageClock()
    clock.wrap(DatasetSource, "read", "read (iterator, memmap -> RAM)")
    clock.wrap(gpu_lanes.NvcompLane, "upload", "upload (staging copy + H2D)")
    clock.wrap(gpu, "chunk_matrix", "carve chunk matrix (device)")
    clock.wrap(gpu, "fill_rows", "all-fill check (device, sync)")
    clock.wrap(gpu_lanes.NvcompLane, "encode", "encode + D2H + host copy")
    clock.wrap(gpu, "build_shard", "build shard (host)")
    clock.wrap(gpu, "store_encoded", "store (writer threads)")
    try:
        wall = write_layout(npy, shape, geometry, "gpu", out)
    finally:
        clock.restore()
    return {"wall_s": wall, "stages": dict(clock.totals), "counts": dict(clock.counts)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-layouts"))
    p.add_argument("--gb", type=float, default=1.0, help="size of the generated recording (without --npy)")
    p.add_argument("--npy", type=Path, default=None, help="reuse a recording (e.g. bench_write.py's ephys .npy)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS), help=f"from {', '.join(KEYS)}")
    p.add_argument("--configs", default="stock-queue,threads,gpu", help=f"from {', '.join(CONFIGS)}")
    p.add_argument("--workers", type=int, default=None, help="max_workers of our configs (default: one per core)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--profile", action="store_true", help="one more gpu write per layout, timing each stage")
    args = p.parse_args(argv)
    args.layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    if unknown := sorted(set(args.layouts) - set(KEYS)):
        p.error(f"unknown layouts {unknown}; choose from {', '.join(KEYS)}")
    if unknown := sorted(set(args.configs) - set(CONFIGS)):
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    npy = args.npy or args.workdir / f"ephys-{args.gb:g}GB.npy"
    shape = generate_ephys(npy, args.gb * 1e9, 0) if not npy.exists() else np.load(npy, mmap_mode="r").shape
    nbytes = int(np.prod(shape)) * 2
    facts = gpu_facts()
    configs = list(args.configs)
    if not facts["available"] and (skipped := [c for c in configs if c in DEVICE_CONFIGS]):
        print(f"[skip] {', '.join(skipped)}: {facts['reason']}")
        configs = [c for c in configs if c not in DEVICE_CONFIGS]
    options = {} if args.workers is None else {"max_workers": args.workers}
    rows = []
    profiles = {}
    for key in args.layouts:
        layout, geometry = KEYS[key], LAYOUTS[KEYS[key]]
        for config in configs:
            out = args.workdir / "out.zarr"
            times = [write_layout(npy, shape, geometry, config, out, **options) for _ in range(args.repeats)]
            stored = sum(f.stat().st_size for f in (out / "c").rglob("*") if f.is_file())
            ok = bool(np.array_equal(zarr.open_array(out, mode="r")[...], np.load(npy, mmap_mode="r")))
            rows.append(
                {
                    "layout": layout,
                    "key": key,
                    "config": config,
                    "all_s": times,
                    "best_s": min(times),
                    "MBps": nbytes / min(times) / 1e6,
                    "compression_ratio": nbytes / stored,
                    "exact": ok,
                }
            )
            print(
                f"{layout:34s} {config:12s} {rows[-1]['MBps']:8.0f} MB/s  ratio {rows[-1]['compression_ratio']:.2f}  exact={ok}",
                flush=True,
            )
        if args.profile and "gpu" in configs:
            profiles[layout] = profile = profile_gpu(npy, shape, geometry, args.workdir / "out.zarr")
            print(f"[profile] gpu, {layout}: wall {profile['wall_s']:.2f} s; thread-seconds per stage:")
            for stage, seconds in profile["stages"].items():
                print(f"           {stage:44s} {seconds:7.2f} s  ({profile['counts'][stage]} calls)")
    add_ratios(rows)
    workers = args.workers or len(os.sched_getaffinity(0))
    result = {"machine": machine_facts(workers), "gpu": facts, "shape": list(shape), "rows": rows}
    save_json(args.output, {**result, "profiles": profiles, "repeats": args.repeats})
    print("\n| layout | config | MB/s | x stock hdmf-zarr queue | x threads | stored ratio | exact |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['layout']} | {r['config']} | {r['MBps']:.0f} | {_ratio(r['x_stock_queue'])} | "
            f"{_ratio(r['x_threads'])} | {r['compression_ratio']:.2f} | {r['exact']} |"
        )
    return 0 if all(r["exact"] for r in rows) else 1


def add_ratios(rows: list[dict]) -> None:
    """Each row's speed over stock's and over threads' on the same layout (``None`` where not run)."""
    for row in rows:
        for base, name in (("stock-queue", "x_stock_queue"), ("threads", "x_threads")):
            ref = next((r for r in rows if r["layout"] == row["layout"] and r["config"] == base), None)
            row[name] = row["MBps"] / ref["MBps"] if ref else None


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
