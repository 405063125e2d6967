"""GPU engine vs CPU engines vs stock hdmf-zarr's own queue, per chunk layout.

nvCOMP compresses one chunk per CUDA block group, so it needs many small chunks: the
sharded layout (64 KiB inner chunks in multi-MiB shards) suits it, 1 MiB chunks do not.
Writes the same 1 GB ephys recording (memmapped .npy, GenericDataChunkIterator) into a
zarr array with each layout, through stock hdmf-zarr's ZarrIODataChunkIteratorQueue and
through our pipeline with engine threads and gpu; prints MB/s and ratios, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_write import NpyMemmapIterator, _StageClock, generate_ephys  # noqa: E402
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue  # noqa: E402

from hdmf_zarr_parallel.engines import make_engine  # noqa: E402
from hdmf_zarr_parallel.options import WriteOptions  # noqa: E402
from hdmf_zarr_parallel.write.dataset import DatasetWrite  # noqa: E402
from hdmf_zarr_parallel.write.pipeline import write_datasets  # noqa: E402
from hdmf_zarr_parallel.write.source import DatasetSource  # noqa: E402

LAYOUTS = {
    "chunks 1 MiB": {"chunks": (8192, 64), "shards": None},
    "shards 3 MiB / inner 64 KiB": {"chunks": (512, 64), "shards": (4096, 384)},
}


def write_layout(npy: Path, shape: tuple[int, ...], geometry: dict, config: str, out: Path, **options) -> float:
    """One write of the recording into a fresh array of ``geometry``; returns the seconds it took.
    ``options`` go to :class:`WriteOptions` (e.g. ``gpu_streams``)."""
    shutil.rmtree(out, ignore_errors=True)
    array = zarr.create_array(zarr.storage.LocalStore(out), shape=shape, dtype="int16", **geometry)
    unit = geometry["shards"] or geometry["chunks"]
    iterator = NpyMemmapIterator(
        str(npy),
        chunk_shape=(min(unit[0], shape[0]), unit[1]),
        buffer_shape=(min(unit[0] * 12, shape[0]), shape[1]),
    )
    t0 = time.perf_counter()
    if config == "stock-queue":
        queue = ZarrIODataChunkIteratorQueue()
        queue.append(array, iterator)
        queue.exhaust_queue()
    else:
        settings = WriteOptions(engine=config, **options)
        write_datasets([DatasetWrite(array, iterator)], make_engine(settings), settings)
    return time.perf_counter() - t0


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-layouts"))
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--npy", type=Path, default=None, help="reuse a recording (e.g. bench_write.py's ephys .npy)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--configs", default="stock-queue,threads,gpu")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--profile", action="store_true", help="one more gpu write per layout, timing each stage")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    npy = args.npy or args.workdir / "ephys.npy"
    shape = generate_ephys(npy, args.gb * 1e9, 0) if not npy.exists() else np.load(npy, mmap_mode="r").shape
    nbytes = int(np.prod(shape)) * 2
    rows = []
    profiles = {}
    for layout, geometry in LAYOUTS.items():
        for config in args.configs.split(","):
            out = args.workdir / "out.zarr"
            times = [write_layout(npy, shape, geometry, config, out) for _ in range(args.repeats)]
            stored = sum(f.stat().st_size for f in (out / "c").rglob("*") if f.is_file())
            ok = bool(np.array_equal(zarr.open_array(out, mode="r")[...], np.load(npy, mmap_mode="r")))
            rows.append(
                {
                    "layout": layout,
                    "config": config,
                    "best_s": min(times),
                    "MBps": nbytes / min(times) / 1e6,
                    "compression_ratio": nbytes / stored,
                    "exact": ok,
                }
            )
            print(
                f"{layout:30s} {config:12s} {rows[-1]['MBps']:8.0f} MB/s  ratio {rows[-1]['compression_ratio']:.2f}  exact={ok}",
                flush=True,
            )
        if args.profile and "gpu" in args.configs.split(","):
            profiles[layout] = profile = profile_gpu(npy, shape, geometry, args.workdir / "out.zarr")
            print(f"[profile] gpu, {layout}: wall {profile['wall_s']:.2f} s; thread-seconds per stage:")
            for stage, seconds in profile["stages"].items():
                print(f"           {stage:44s} {seconds:7.2f} s  ({profile['counts'][stage]} calls)")
    for row in rows:
        base = next(r for r in rows if r["layout"] == row["layout"] and r["config"] == "stock-queue")
        row["x_stock_queue"] = row["MBps"] / base["MBps"]
    args.output.write_text(json.dumps({"shape": list(shape), "rows": rows, "profiles": profiles}, indent=2))
    print("\n| layout | config | MB/s | x stock hdmf-zarr queue | stored ratio | exact |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['layout']} | {r['config']} | {r['MBps']:.0f} | {r['x_stock_queue']:.2f} | {r['compression_ratio']:.2f} | {r['exact']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
