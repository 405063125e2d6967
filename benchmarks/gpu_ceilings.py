"""Ceilings for the GPU engine, measured on the benchmark's own data and chunks.

Each figure is MB/s of *uncompressed* data, so it compares directly with the
end-to-end write rates of ``bench_write.py``:

* source read: copying the memmapped recording in iterator-buffer pieces (what the
  iterator costs at best);
* pinned H2D: copying from pinned host memory to the device;
* nvCOMP kernel: one batched zstd encode of the case's chunks already on the device,
  read in place from one matrix, nothing copied back (nvCOMP alone);
* nvCOMP encode: the same through our encoder, including the D2H copy of the compressed
  bytes to host memory (``NvcompBatchEncoder.encode_rows``);
* store write: writing the compressed chunks as files with a pool of threads, to the
  given directories (local disk, /dev/shm), scaled by the compression ratio.

Usage: python benchmarks/gpu_ceilings.py --npy ephys.npy --chunks 8192,64 --out ceilings.json
       --store-dir /tmp/x --store-dir /dev/shm/x
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gil_free_share(work) -> float:
    """How much a pure-Python thread progresses while ``work`` runs, relative to while sleeping:
    near 1 when ``work`` releases the GIL while it waits for the GPU, near 0 when it holds it."""
    import threading

    def spin_rate(wait) -> float:
        stop = threading.Event()
        count = [0]

        def spin():
            while not stop.is_set():
                count[0] += 1

        thread = threading.Thread(target=spin)
        thread.start()
        t0 = time.perf_counter()
        wait()
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join()
        return count[0] / elapsed

    idle = spin_rate(lambda: time.sleep(0.3))
    return spin_rate(work) / idle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npy", type=Path, required=True)
    p.add_argument("--chunks", required=True, help="chunk shape, e.g. 8192,64")
    p.add_argument("--batch-mb", type=int, default=128)
    p.add_argument("--buffer-mb", type=int, default=96)
    p.add_argument("--writers", type=int, default=os.cpu_count())
    p.add_argument("--store-dir", type=Path, action="append", default=[])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import cupy
    import cupyx
    import zarr
    from nvidia import nvcomp

    from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder, make_nvcomp_codec
    from hdmf_zarr_parallel.gpu.plan import classify

    source = np.load(args.npy, mmap_mode="r")
    chunks = tuple(int(c) for c in args.chunks.split(","))
    chunk_bytes = math.prod(chunks) * source.dtype.itemsize
    result: dict = {"npy": args.npy.name, "shape": list(source.shape), "chunks": list(chunks)}

    # source read, in iterator-buffer pieces along axis 0
    rows = max(1, (args.buffer_mb << 20) // (math.prod(source.shape[1:]) * source.dtype.itemsize))
    read_s = best_of(1, lambda: [np.array(source[i : i + rows]) for i in range(0, source.shape[0], rows)])
    result["source_read_MBps"] = source.nbytes / read_s / 1e6

    # a batch of whole chunks from the start of the recording
    per_batch = max(1, (args.batch_mb << 20) // chunk_bytes)
    lead = chunks[0]
    host_chunks = []
    for i in range(per_batch):
        block = np.ascontiguousarray(source[(slice(i * lead, (i + 1) * lead), *(slice(0, c) for c in chunks[1:]))])
        if block.shape != chunks:
            break
        host_chunks.append(block)
    batch_bytes = len(host_chunks) * chunk_bytes
    pinned = cupyx.empty_pinned(batch_bytes, dtype=np.uint8)
    pinned[:] = np.concatenate([c.reshape(-1).view(np.uint8) for c in host_chunks])
    device = cupy.empty(batch_bytes, dtype=np.uint8)
    stream = cupy.cuda.Stream(non_blocking=True)

    def h2d():
        device.set(pinned, stream=stream)
        stream.synchronize()

    h2d()
    result["pinned_h2d_MBps"] = batch_bytes / best_of(args.repeats, h2d) / 1e6

    array = zarr.create_array(zarr.storage.MemoryStore(), shape=source.shape, dtype=source.dtype, chunks=chunks)
    plan = classify(array)
    matrix = cupy.asarray(np.stack([c.reshape(-1) for c in host_chunks]))
    cupy.cuda.Device().synchronize()

    # nvCOMP alone: the batch read in place from the device matrix, no copy back
    codec, _ = make_nvcomp_codec("zstd", stream.ptr, chunk_bytes)
    count = len(matrix)
    flat = matrix.reshape(-1).view(cupy.uint8)
    batch = nvcomp.as_arrays(
        flat, [i * chunk_bytes for i in range(count)], [chunk_bytes] * count, cuda_stream=stream.ptr
    )

    def kernel_only():
        codec.encode(batch)
        stream.synchronize()

    kernel_only()
    result["nvcomp_kernel_MBps"] = batch_bytes / best_of(args.repeats, kernel_only) / 1e6

    # our encoder: nvCOMP + the copy of the compressed bytes to the host
    with NvcompBatchEncoder(plan, stream=stream) as encoder:
        encoded = encoder.encode_rows(matrix)  # warm-up
        result["nvcomp_encode_MBps"] = batch_bytes / best_of(args.repeats, lambda: encoder.encode_rows(matrix)) / 1e6
        result["gil_free_share_during_encode"] = gil_free_share(lambda: encoder.encode_rows(matrix))
        result["encoder_preallocated_output"] = encoder.preallocated_output
    compressed = [bytes(e) for e in encoded]
    ratio = batch_bytes / sum(map(len, compressed))
    result["compression_ratio"] = ratio
    result["batch_bytes"] = batch_bytes

    for target in args.store_dir:

        def write_all(target=target):
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with ThreadPoolExecutor(args.writers) as pool:
                list(pool.map(lambda ib: (target / str(ib[0])).write_bytes(ib[1]), enumerate(compressed)))

        seconds = best_of(args.repeats, write_all)
        result[f"store_write_MBps[{target}]"] = batch_bytes / seconds / 1e6
        shutil.rmtree(target, ignore_errors=True)

    args.out.write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        print(f"  {key:40s} {value:.1f}" if isinstance(value, float) else f"  {key:40s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
