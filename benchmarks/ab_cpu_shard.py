"""A/B in one process: CPU shard encoding by ``cpu/shard.py`` against zarr's own ShardingCodec.

Writes the same ephys recording (memmapped .npy) into the sharded layout of
``bench_gpu_layouts.py`` (64 KiB inner chunks in 3 MiB shards) with the threads engine,
alternating the two shard encoders, then once through stock hdmf-zarr's queue. Both
encoders produce the same bytes (``tests/test_cpu_shard.py``); the question is how well
they scale across threads, since zarr's per-inner-chunk Python holds the GIL.

    python benchmarks/ab_cpu_shard.py --npy /tmp/bw/ephys-1GB-seed0.npy --output /tmp/shard-ab.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_gpu_layouts import LAYOUTS, write_layout  # noqa: E402
from bench_write import machine_facts, save_json  # noqa: E402

from hdmf_zarr_parallel.cpu import shard as cpu_shard  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--npy", type=Path, required=True, help="an int16 (samples, channels) recording")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--out-dir", type=Path, default=Path("/tmp/hzp-ab-shard.zarr"))
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    workers = args.workers or len(os.sched_getaffinity(0))
    shape = np.load(args.npy, mmap_mode="r").shape
    nbytes = int(np.prod(shape)) * 2
    geometry = LAYOUTS["shards 3 MiB / inner 64 KiB"]
    ours = cpu_shard.CpuShardEncoder.for_array
    zarrs = classmethod(lambda cls, array, spec: None)  # every shard through zarr's ShardingCodec
    times: dict[str, list[float]] = {"cpu_shard": [], "zarr ShardingCodec": [], "stock queue": []}
    try:
        for _ in range(args.repeats):
            for name, factory in (("cpu_shard", ours), ("zarr ShardingCodec", zarrs)):
                cpu_shard.CpuShardEncoder.for_array = factory
                times[name].append(
                    write_layout(args.npy, shape, geometry, "threads", args.out_dir, max_workers=workers)
                )
                print(f"[write] {name:18s} {times[name][-1]:.2f} s", flush=True)
    finally:
        cpu_shard.CpuShardEncoder.for_array = ours
    times["stock queue"].append(write_layout(args.npy, shape, geometry, "stock-queue", args.out_dir))
    shutil.rmtree(args.out_dir, ignore_errors=True)
    rows = {k: {"best_s": min(v), "all_s": v, "MBps": nbytes / min(v) / 1e6} for k, v in times.items()}
    print(f"\n{nbytes / 1e9:.2f} GB, {geometry}, threads ({workers})")
    for name, r in rows.items():
        print(f"| {name} | {r['best_s']:.2f} s | {r['MBps']:.0f} MB/s |")
    gain = rows["zarr ShardingCodec"]["best_s"] / rows["cpu_shard"]["best_s"]
    print(f"cpu_shard against zarr's ShardingCodec: {gain:.3f}x; against the stock queue: "
          f"{rows['stock queue']['best_s'] / rows['cpu_shard']['best_s']:.2f}x")  # fmt: skip
    save_json(args.output, {"machine": machine_facts(workers), "rows": rows, "gain": gain})
    return 0


if __name__ == "__main__":
    sys.exit(main())
