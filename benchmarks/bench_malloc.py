"""What one chunk's buffers cost under the GIL with glibc's default malloc thresholds and with
``tune_malloc`` (``hdmf_zarr_parallel.write.allocator``): the free of a compressed chunk, and
the padded copy of a chunk out of a larger buffer and its free.

Each variant runs in a fresh interpreter (the thresholds are process-wide and set once).
Freeing happens in the thread that drops the last reference, which holds the GIL, so the
free column is GIL-held time per chunk; the copy itself releases the GIL, but its page
faults on fresh memory make it slower.

    python benchmarks/bench_malloc.py [--chunks 42] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
import numpy as np
from numcodecs import Zstd
from hdmf_zarr_parallel.write import allocator

tuned = allocator.retain_freed_memory() if sys.argv[1] == "tuned" else False
chunks, repeats = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
source = np.cumsum(rng.normal(0, 20, size=(8192 * chunks, 384)), axis=0).astype("int16")  # ephys-like
codec = Zstd(level=0)
frees, copies, copy_frees = [], [], []
for _ in range(repeats):
    units = [np.ascontiguousarray(source[i * 8192:(i + 1) * 8192, :64]) for i in range(chunks)]
    encoded = [codec.encode(u.reshape(-1).view(np.uint8)) for u in units]
    t = time.perf_counter(); del encoded; frees.append((time.perf_counter() - t) / chunks)
    t = time.perf_counter()
    pads = [np.ascontiguousarray(source[i * 8192:(i + 1) * 8192, 64:128]) for i in range(chunks)]
    t1 = time.perf_counter(); del pads; t2 = time.perf_counter()
    copies.append((t1 - t) / chunks); copy_frees.append((t2 - t1) / chunks)
print(json.dumps({"tuned": tuned, "free_encoded_us": frees, "copy_us": copies, "free_copy_us": copy_frees}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=42, help="1 MiB int16 chunks (8192 x 64) per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'malloc':8s} {'free encoded µs':>16s} {'copy µs':>9s} {'free copy µs':>13s}   (medians per 1 MiB chunk)")
    for variant in ("default", "tuned"):
        argv_child = [sys.executable, "-c", CHILD, variant, str(args.chunks), str(args.repeats)]
        result = json.loads(subprocess.run(argv_child, check=True, capture_output=True, text=True).stdout)
        if variant == "tuned" and not result["tuned"]:
            print("tuned    (not applied here: not Linux/glibc, or glibc's malloc variables are set)")
            continue
        med = {k: statistics.median(v) * 1e6 for k, v in result.items() if k != "tuned"}
        print(f"{variant:8s} {med['free_encoded_us']:16.1f} {med['copy_us']:9.1f} {med['free_copy_us']:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
