"""Whole shards written from device memory with kvikio (cuFile), against what the gpu engine
does now: one D2H copy of the batch into pinned memory, then host threads writing the files.

The shard bytes are real: each 3 MiB slice of the recording compressed with zstd on the CPU
(the write speed depends on the sizes, not on which encoder made them). All shards sit in one
device buffer, as a batch's output does. Each configuration writes one file per shard into a
fresh directory, best of ``--repeats``, with ``os.sync()`` between runs. Prints MB/s of shard
bytes and whether kvikio ran in compatibility mode (POSIX through bounce buffers, no GDS).

Usage: python benchmarks/gpu_kvikio.py --npy ephys.npy --dir /tmp/kvikio-bench --output kvikio.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np


def timed_writes(target: Path, repeats: int, write_all) -> float:
    """Best seconds of ``write_all(target)`` into a fresh directory."""
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        os.sync()
        t0 = time.perf_counter()
        write_all(target)
        best = min(best, time.perf_counter() - t0)
    shutil.rmtree(target, ignore_errors=True)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npy", type=Path, required=True)
    p.add_argument("--dir", type=Path, default=Path("/tmp/hzp-kvikio"))
    p.add_argument("--shard-mb", type=int, default=3)
    p.add_argument("--shards", type=int, default=160, help="how many shards (160 x 3 MiB ~ 0.5 GB raw)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    import cupy
    import cupyx
    import kvikio

    raw = np.load(args.npy, mmap_mode="r").reshape(-1).view(np.uint8)
    step = args.shard_mb << 20
    count = min(args.shards, raw.size // step)
    codec = numcodecs.Zstd(level=1)
    blobs = [codec.encode(np.ascontiguousarray(raw[i * step : (i + 1) * step])) for i in range(count)]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    total = int(offsets[-1])
    device = cupy.asarray(np.frombuffer(b"".join(blobs), dtype=np.uint8))
    shards = [device[offsets[i] : offsets[i + 1]] for i in range(count)]
    cupy.cuda.Device().synchronize()

    pinned = cupyx.empty_pinned(total, dtype=np.uint8)  # allocated once, as the engine's pool reuses it

    def d2h_then_threads(target: Path) -> None:
        device.get(out=pinned)
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda i: (target / str(i)).write_bytes(pinned[offsets[i] : offsets[i + 1]]), range(count)))

    def kvikio_threads(target: Path) -> None:
        def write(i: int) -> None:
            with kvikio.CuFile(str(target / str(i)), "w") as f:
                f.write(shards[i])

        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(write, range(count)))

    result: dict = {"shards": count, "shard_raw_bytes": step, "stored_bytes": total, "threads": args.threads}
    try:
        result["kvikio_version"] = kvikio.__version__
        result["kvikio_compat_mode"] = str(kvikio.defaults.compat_mode())
    except Exception as exc:  # the attribute moved between kvikio releases
        result["kvikio_compat_mode"] = f"unknown ({type(exc).__name__})"
    for name, write_all in (("d2h_plus_host_threads", d2h_then_threads), ("kvikio_cufile_threads", kvikio_threads)):
        seconds = timed_writes(args.dir / name, args.repeats, write_all)
        result[f"{name}_MBps"] = total / seconds / 1e6
        print(f"  {name:28s} {result[f'{name}_MBps']:8.0f} MB/s of shard bytes", flush=True)
    result["kvikio_over_d2h"] = result["kvikio_cufile_threads_MBps"] / result["d2h_plus_host_threads_MBps"]
    print(
        f"  kvikio / (D2H + threads)     {result['kvikio_over_d2h']:8.2f}x  (compat mode: {result['kvikio_compat_mode']})"
    )
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
