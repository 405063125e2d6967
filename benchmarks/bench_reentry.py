#!/usr/bin/env python
"""What a few lines of Python cost right after native work: why each GIL re-entry counts.

A writer thread runs a little Python between native calls (a copy, a compression, a file
write) that release the GIL. Those lines run with caches the native work has just filled
with other data, so they take several times longer than the same lines in a tight loop, and
the GIL is held all that time. This measures one fixed snippet (40 attribute and dict reads)
hot, and right after each kind of native call a writer makes per chunk: the per-chunk floor
of GIL-held time is roughly (native calls per chunk) x (the cold cost), whatever the Python.

    python benchmarks/bench_reentry.py            # medians of 200 repeats each
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
from numcodecs.zstd import compress


class _Thing:
    def __init__(self) -> None:
        self.a = 1
        self.d = {"x": 1}


def snippet(thing: _Thing) -> int:
    total = 0
    for _ in range(20):
        total += thing.a + thing.d["x"]
    return total


def cold_cost(before: Callable[[], object], repeats: int) -> float:
    """Median microseconds of :func:`snippet` run right after ``before()``."""
    thing, clock, times = _Thing(), time.perf_counter, []
    for _ in range(repeats):
        before()
        start = clock()
        snippet(thing)
        times.append(clock() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    chunk = rng.normal(0, 30, (8192, 64)).astype(np.int16)  # 1 MiB of ephys-like data
    strided = rng.normal(0, 30, (8192, 384)).astype(np.int16)[:, 64:128]  # a chunk cut from a buffer
    inner = np.ascontiguousarray(chunk[:512])  # 64 KiB
    fd, path = tempfile.mkstemp()
    try:
        cases = {
            "nothing (hot loop)": lambda: None,
            "zstd of a 64 KiB inner chunk": lambda: compress(inner, level=0),
            "zstd of a 1 MiB chunk": lambda: compress(chunk, level=0),
            "strided copy of a 1 MiB chunk": lambda: np.ascontiguousarray(strided),
            "os.write of 1 MiB": lambda: os.pwrite(fd, chunk, 0),
            "time.sleep(1 ms)": lambda: time.sleep(0.001),
        }
        hot = None
        print(f"{'the snippet right after':34s} {'median us':>10s} {'x hot':>6s}")
        for name, before in cases.items():
            cost = cold_cost(before, args.repeats)
            hot = hot or cost
            print(f"{name:34s} {cost:10.1f} {cost / hot:6.1f}")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
