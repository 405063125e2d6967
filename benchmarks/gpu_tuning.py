"""How many GPU lanes (``gpu_streams``) and CPU workers on their queue (``gpu_cpu_helpers``) the
gpu engine should run, per chunk layout.

Writes the ephys recording with each layout of ``bench_gpu_layouts.py`` through stock
hdmf-zarr's queue (the baseline, same run) and through engine="gpu": each lane count
without sharing (``gpu_cpu_helpers=0``), then each CPU worker count with 4 lanes. Prints MB/s and ratios, writes JSON.

Usage: python benchmarks/gpu_tuning.py --npy ephys.npy --streams 2,4,8 --helpers 4,8,12 --output tuning.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu_layouts import DEFAULT_LAYOUTS, KEYS, LAYOUTS, write_layout  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npy", type=Path, required=True)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-tuning"))
    p.add_argument("--streams", default="2,4,8,12")
    p.add_argument("--helpers", default="", help="CPU worker counts to try with 4 lanes, e.g. 4,8,12")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = np.load(args.npy, mmap_mode="r")
    shape, nbytes = source.shape, source.nbytes
    out = args.workdir / "out.zarr"
    rows = []
    for layout in (KEYS[key] for key in DEFAULT_LAYOUTS):
        geometry = LAYOUTS[layout]
        stock = write_layout(args.npy, shape, geometry, "stock-queue", out)
        rows.append({"layout": layout, "config": "stock-queue", "best_s": stock, "MBps": nbytes / stock / 1e6})
        settings = [(int(n), 0) for n in args.streams.split(",") if n]
        settings += [(4, int(n)) for n in args.helpers.split(",") if n]
        for streams, helpers in settings:
            best = min(
                write_layout(args.npy, shape, geometry, "gpu", out, gpu_streams=streams, gpu_cpu_helpers=helpers)
                for _ in range(args.repeats)
            )
            rows.append(
                {
                    "layout": layout,
                    "config": f"gpu, {streams} streams, {helpers} CPU workers",
                    "streams": streams,
                    "cpu_helpers": helpers,
                    "best_s": best,
                    "MBps": nbytes / best / 1e6,
                    "x_stock_queue": stock / best,
                }
            )
            print(
                f"{layout:30s} {rows[-1]['config']:32s} {rows[-1]['MBps']:7.0f} MB/s  {stock / best:5.2f}x stock",
                flush=True,
            )
    args.output.write_text(json.dumps({"shape": list(shape), "rows": rows}, indent=2))
    print("\n| layout | config | MB/s | x stock hdmf-zarr queue |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['config']} | {r['MBps']:.0f} | {r.get('x_stock_queue', 1.0):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
