"""Sequential ``DataChunkIterator`` writes: stock hdmf-zarr vs hdmf-zarr-parallel.

A ``DataChunkIterator`` hands out buffers of ``buffer_size`` rows in order (hdmf's default
is ONE row). Stock hdmf-zarr writes each buffer with ``dset[selection] = data``, so a zarr
chunk taller than a buffer is read, decoded, merged, re-encoded and rewritten once per
buffer. Ours assembles each chunk whole from the buffers and encodes it once.

The data: int16 ephys-like noise (a random walk), 384 channels, in an NWB TimeSeries with
zarr chunks of 8192 x 64 (1 MiB) and zarr's default zstd for both writers. Every output is
read back with stock ``NWBZarrIO`` and compared exactly. Prints a table, writes JSON.

    python benchmarks/bench_sequential.py --rows 200000 --buffer-rows 1000,100 --output /tmp/seq.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_write import machine_facts, save_json  # noqa: E402

CHUNKS = (8192, 64)


def nwbfile_with(data: np.ndarray, buffer_rows: int):
    from hdmf.data_utils import DataChunkIterator
    from hdmf_zarr import ZarrDataIO
    from pynwb import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    nwbfile = mock_NWBFile()
    iterator = DataChunkIterator(data=data, buffer_size=buffer_rows)
    nwbfile.add_acquisition(TimeSeries(name="x", data=ZarrDataIO(iterator, chunks=CHUNKS), unit="V", rate=30000.0))
    return nwbfile


def write_once(writer: str, data: np.ndarray, buffer_rows: int, out: Path, workers: int) -> float:
    from hdmf_zarr.nwb import NWBZarrIO

    from hdmf_zarr_parallel import NWBParallelZarrIO

    shutil.rmtree(out, ignore_errors=True)
    nwbfile = nwbfile_with(data, buffer_rows)
    t0 = time.perf_counter()
    if writer == "stock":
        with NWBZarrIO(str(out), mode="w") as io:
            io.write(nwbfile)
    else:
        with NWBParallelZarrIO(str(out), mode="w", engine="threads", max_workers=workers) as io:
            io.write(nwbfile)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=200_000, help="samples (rows of 384 int16 channels)")
    p.add_argument("--buffer-rows", default="1000,100", help="comma-separated DataChunkIterator buffer sizes")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="ours: threads (default: all cores)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-bench-sequential"))
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")  # zarr's consolidated-metadata notice, once per write
    workers = args.workers or len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    data = np.cumsum(rng.normal(0, 3, (args.rows, 384)), axis=0).astype(np.int16)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for buffer_rows in (int(b) for b in args.buffer_rows.split(",")):
        times: dict[str, list[float]] = {"stock": [], "ours": []}
        for repeat in range(args.repeats):
            for writer in times:
                out = args.workdir / f"{writer}.nwb.zarr"
                times[writer].append(write_once(writer, data, buffer_rows, out, workers))
                if repeat == 0:
                    from hdmf_zarr.nwb import NWBZarrIO

                    with NWBZarrIO(str(out), mode="r") as io:
                        if not np.array_equal(io.read().acquisition["x"].data[:], data):
                            raise SystemExit(f"{writer}, buffers of {buffer_rows} rows: data differ")
                print(
                    f"[write] buffers of {buffer_rows:5d} rows  {writer:5s} rep {repeat + 1}: {times[writer][-1]:.2f} s"
                )
                shutil.rmtree(out, ignore_errors=True)
        stock, ours = min(times["stock"]), min(times["ours"])
        rows.append(
            {
                "buffer_rows": buffer_rows,
                "stock_best_s": stock,
                "ours_best_s": ours,
                "stock_MBps": data.nbytes / stock / 1e6,
                "ours_MBps": data.nbytes / ours / 1e6,
                "x_stock": stock / ours,
                "all_s": times,
            }
        )
    print(f"\n{data.nbytes / 1e6:.0f} MB, chunks {CHUNKS}, ours: threads ({workers})")
    print("| buffer rows | stock s | ours s | stock MB/s | ours MB/s | x stock |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['buffer_rows']} | {r['stock_best_s']:.2f} | {r['ours_best_s']:.2f} | {r['stock_MBps']:.0f} "
            f"| {r['ours_MBps']:.0f} | {r['x_stock']:.2f} |"
        )
    save_json(args.output, {"machine": machine_facts(workers), "bytes": data.nbytes, "chunks": CHUNKS, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
