"""NWB Zarr v2 -> NWB Zarr v3: stock ``NWBZarrV2IO.convert_to_v3`` vs ``hdmf_zarr_parallel.tools.convert``.

**The source** is an NWB Zarr v2 store as neuroconv writes them today: a raw int16
``ElectricalSeries`` of ``--channels`` (384) channels and ``--mb`` (200) MB, in chunks of hdmf's
``chunk_mb=10`` heuristic (neuroconv's default) compressed with numcodecs ``GZip(level=1)``
(neuroconv's Zarr default; ``--v2-codec blosc``: hdmf-zarr 0.13's default Blosc lz4). hdmf-zarr
0.14 cannot write Zarr v2 and zarr 2 cannot share this environment, so it is made like this:
the committed fixture ``tests/data/ephys_v2.nwb.zarr`` (written by hdmf-zarr 0.13 + zarr 2, see
``tests/data/make_v2_fixture.py``) is copied, and its ``acquisition/raw/data`` and electrodes
table are regrown to the benchmark's size by writing Zarr v2 chunks and ``.zarray`` files
directly with numcodecs, in the layout zarr 2 writes (full-size edge chunks, ``i.j`` keys, the
consolidated ``.zmetadata`` updated); the electrodes' pickle-encoded ``group`` references are
re-encoded the same way. The data is ``bench.generate_ephys``'s (pink-ish noise, spikes).

**Configurations**, interleaved over ``--repeats`` repetitions, each into a fresh store:

- ``stock``: ``NWBZarrV2IO.convert_to_v3(src, dst, allow_pickle=True)`` (serial ``_copy_array``);
- ``threads``: ``convert(src, dst, ConvertOptions(engine="threads", allow_pickle=True))``: the same
  codecs, chunks and attributes as stock;
- ``threads-zstd``: the same with ``codec="zstd"``;
- ``gpu``: ``engine="gpu"`` with stock's codecs, where a GPU is usable.

The first repetition's outputs are compared with stock's (``compare_zarr_stores``) and with the
source (``compare_nwb_files``), untimed. Prints best / median seconds, MB/s of uncompressed array
data, the paired ratio (median over repetitions of stock / this, same repetition) and writes JSON.

    python benchmarks/bench_convert_v2.py --mb 200 --repeats 3 --output /tmp/convert_v2.json
    python benchmarks/bench_convert_v2.py --mb 8 --channels 64 --repeats 2 --output /tmp/tiny.json  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "src"))

from bench_write import _cpu_seconds, machine_facts, save_json  # noqa: E402

from hdmf_zarr_parallel.tools.bench_data import generate_ephys  # noqa: E402
from hdmf_zarr_parallel.tools.convert import ConvertOptions, convert  # noqa: E402
from hdmf_zarr_parallel.tools.convert_plan import ShapeOnly  # noqa: E402
from hdmf_zarr_parallel.tools.verify import compare_nwb_files, compare_zarr_stores  # noqa: E402
from hdmf_zarr_parallel.tools.zarr_v2 import pickle_decoding  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "ephys_v2.nwb.zarr"
CONFIGS = ("stock", "threads", "threads-zstd", "gpu")
V2_CODECS = {
    "gzip": {"id": "gzip", "level": 1},
    "blosc": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
}
RAW = "acquisition/raw/data"
ELECTRODES = "general/extracellular_ephys/electrodes"


# --------------------------------------------------------------------------------------
# The source: the committed v2 fixture, regrown with Zarr v2 chunks written by numcodecs
# --------------------------------------------------------------------------------------
def _codecs(meta: dict):
    import numcodecs

    compressor = numcodecs.get_codec(meta["compressor"]) if meta.get("compressor") else None
    filters = [numcodecs.get_codec(f) for f in meta.get("filters") or []]
    return compressor, filters


def _decode_single_chunk(array_dir: Path) -> np.ndarray:
    """The values of a one-chunk v2 array (the fixture's electrodes columns)."""
    meta = json.loads((array_dir / ".zarray").read_text())
    compressor, filters = _codecs(meta)
    raw = (array_dir / "0").read_bytes()
    raw = compressor.decode(raw) if compressor else raw
    if meta["dtype"] == "|O":
        for f in reversed(filters):
            raw = f.decode(raw)
        values = np.asarray(raw, dtype=object)
    else:
        values = np.frombuffer(raw, dtype=meta["dtype"]).copy()
    return values[: meta["shape"][0]]


def _write_single_chunk(array_dir: Path, values: np.ndarray) -> dict:
    meta = json.loads((array_dir / ".zarray").read_text())
    compressor, filters = _codecs(meta)
    if meta["dtype"] == "|O":
        raw = values
        for f in filters:
            raw = f.encode(raw)
    else:
        raw = np.ascontiguousarray(values, dtype=meta["dtype"]).tobytes()
    (array_dir / "0").write_bytes(compressor.encode(raw) if compressor else raw)
    meta["shape"] = meta["chunks"] = [len(values)]
    (array_dir / ".zarray").write_text(json.dumps(meta, indent=4, sort_keys=True))
    return meta


def _write_v2_array(array_dir: Path, data: np.ndarray, chunks: tuple[int, ...], compressor: dict, workers: int) -> dict:
    """``data`` as a zarr-2-style v2 array: full-size (zero-padded) edge chunks under ``i.j`` keys."""
    import numcodecs

    codec = numcodecs.get_codec(compressor)
    for old in array_dir.iterdir():
        if not old.name.startswith("."):
            old.unlink()
    grid = [range(math.ceil(s / c)) for s, c in zip(data.shape, chunks, strict=True)]

    def one(index: tuple[int, ...]) -> None:
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, data.shape, strict=True))
        block = np.zeros(chunks, dtype=data.dtype)
        block[tuple(slice(0, r.stop - r.start) for r in region)] = data[region]
        (array_dir / ".".join(map(str, index))).write_bytes(codec.encode(block.tobytes()))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, itertools.product(*grid)))
    meta = json.loads((array_dir / ".zarray").read_text())
    meta.update(shape=list(data.shape), chunks=list(chunks), compressor=compressor, dtype=data.dtype.str, filters=None)
    (array_dir / ".zarray").write_text(json.dumps(meta, indent=4, sort_keys=True))
    return meta


def make_source(workdir: Path, mb: float, channels: int, v2_codec: str, seed: int, workers: int) -> tuple[Path, dict]:
    source = workdir / f"ephys-v2-{mb:g}MB-{channels}ch-{v2_codec}.nwb.zarr"
    facts_file = source.with_suffix(".json")
    if source.exists() and facts_file.exists():
        return source, json.loads(facts_file.read_text())
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(FIXTURE, source)
    npy = workdir / f"ephys-{mb:g}MB-{channels}ch-seed{seed}.npy"
    if not npy.exists():
        generate_ephys(npy, mb * 1e6, seed, channels)
    data = np.load(npy, mmap_mode="r")
    chunks = tuple(
        int(c) for c in ShapeOnly(data.shape, data.dtype, chunk_mb=10.0, buffer_shape=data.shape).chunk_shape
    )
    changed = {RAW: _write_v2_array(source / RAW, data, chunks, V2_CODECS[v2_codec], workers)}
    with pickle_decoding(True):  # the fixture's electrodes/group: pickle-encoded references we wrote
        for column in sorted(p for p in (source / ELECTRODES).iterdir() if (p / ".zarray").exists()):
            old = _decode_single_chunk(column)
            if column.name == "id":
                new = np.arange(channels, dtype=old.dtype)
            elif column.name == "x":
                new = np.arange(channels, dtype=old.dtype) * 10.0
            elif column.name == "label":
                new = np.array([f"ch{i:03d}" for i in range(channels)], dtype=object)
            else:
                new = np.resize(old, channels)
            changed[f"{ELECTRODES}/{column.name}"] = _write_single_chunk(column, new)
        region = source / "acquisition/raw/electrodes"
        changed["acquisition/raw/electrodes"] = _write_single_chunk(region, np.arange(channels))
    zmeta = json.loads((source / ".zmetadata").read_text())
    for key, meta in changed.items():
        zmeta["metadata"][f"{key}/.zarray"] = meta
    (source / ".zmetadata").write_text(json.dumps(zmeta, indent=4, sort_keys=True))
    facts = {
        "shape": list(data.shape),
        "chunks": list(chunks),
        "v2_compressor": V2_CODECS[v2_codec],
        "array_bytes": int(data.nbytes),
        "store_bytes": sum(p.stat().st_size for p in source.rglob("*") if p.is_file()),
    }
    facts_file.write_text(json.dumps(facts))
    return source, facts


# --------------------------------------------------------------------------------------
# The conversions
# --------------------------------------------------------------------------------------
def convert_once(config: str, source: Path, out: Path, workers: int) -> tuple[float, float]:
    """One conversion into ``out``; returns (wall seconds, CPU seconds of this process)."""
    from hdmf_zarr import NWBZarrV2IO

    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if config == "stock":
            with pickle_decoding(True):  # numcodecs 0.17 needs it besides allow_pickle (see zarr_v2.py)
                NWBZarrV2IO.convert_to_v3(str(source), str(out), allow_pickle=True)
        else:
            options = ConvertOptions(
                engine="gpu" if config == "gpu" else "threads",
                workers=workers,
                codec="zstd" if config == "threads-zstd" else None,
                allow_pickle=True,
            )
            convert(source, out, options)
    return time.perf_counter() - t0, _cpu_seconds() - cpu0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hzp-bench-convert-v2"), help="source and outputs")
    p.add_argument("--mb", type=float, default=200.0, help="raw ephys size in MB (default 200)")
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--v2-codec", choices=sorted(V2_CODECS), default="gzip", help="the source's compressor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    p.add_argument("--configs", default="stock,threads", help=f"from {', '.join(CONFIGS)}")
    p.add_argument("--output", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs: {sorted(unknown)}")
    workers = args.workers or len(os.sched_getaffinity(0))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"[source] making / reusing a {args.mb:g} MB Zarr v2 source in {args.workdir} ...", flush=True)
    source, facts = make_source(args.workdir, args.mb, args.channels, args.v2_codec, args.seed, workers)
    nbytes = facts["array_bytes"]
    print(
        f"[source] {source.name}: raw {tuple(facts['shape'])} int16 in {tuple(facts['chunks'])} chunks, "
        f"{facts['v2_compressor']['id']}; {nbytes / 1e6:.0f} MB of arrays, {facts['store_bytes'] / 1e6:.0f} MB on disk"
    )
    if "gpu" in configs:
        from hdmf_zarr_parallel.gpu.status import gpu_status

        if not (status := gpu_status()).available:
            print(f"[skip] gpu: {status.reason}")
            configs.remove("gpu")
    runs: dict[str, list[tuple[float, float]]] = {c: [] for c in configs}
    reference = args.workdir / "reference-stock.nwb.zarr"
    for repeat in range(args.repeats):
        for config in configs:
            out = args.workdir / f"out-{config}.nwb.zarr"
            wall, cpu = convert_once(config, source, out, workers)
            runs[config].append((wall, cpu))
            note = ""
            if repeat == 0:
                note = "; " + check(config, source, out, reference, workers)
            print(f"[convert] {config:13s} rep {repeat + 1}: {wall:6.2f} s  cpu {cpu:5.1f} s{note}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(reference, ignore_errors=True)
    rows = summarize(runs, nbytes)
    result = {
        "machine": machine_facts(workers),
        "source": {"store": source.name, **facts},
        "repeats": args.repeats,
        "rows": rows,
    }
    save_json(args.output, result)
    return 0


def check(config: str, source: Path, out: Path, reference: Path, workers: int) -> str:
    """Untimed: the output holds the source's content, and (default codecs) equals stock's store."""
    problems = compare_nwb_files(source, out, allow_pickle=True)
    if problems:
        raise SystemExit(f"{config}: output differs from the source: {problems[:3]}")
    if config == "stock":
        return "same content as the source"
    if not reference.exists():
        convert_once("stock", source, reference, workers)
    diff = compare_zarr_stores(reference, out, ignore_layout=config == "threads-zstd")
    if diff:
        raise SystemExit(f"{config}: output differs from stock's conversion: {diff[:3]}")
    return "same content as the source, same store as stock" + (" (but the codec)" if config == "threads-zstd" else "")


def summarize(runs: dict[str, list[tuple[float, float]]], nbytes: int) -> list[dict]:
    stock = [w for w, _ in runs.get("stock", [])]
    rows = []
    for config, tries in runs.items():
        walls = [w for w, _ in tries]
        rows.append(
            {
                "config": config,
                "best_s": min(walls),
                "median_s": statistics.median(walls),
                "all_s": walls,
                "min_cpu_s": min(c for _, c in tries),
                "MBps": nbytes / min(walls) / 1e6,
                "x_stock_best": min(stock) / min(walls) if stock else None,
                "x_stock_paired": statistics.median(s / w for s, w in zip(stock, walls, strict=True))
                if stock
                else None,
            }
        )
    print("\n| config | best s | median s | MB/s | x stock (paired median) | x stock (best) | min cpu s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        paired = f"{r['x_stock_paired']:.2f}" if r["x_stock_paired"] else "-"
        best = f"{r['x_stock_best']:.2f}" if r["x_stock_best"] else "-"
        print(
            f"| {r['config']} | {r['best_s']:.2f} | {r['median_s']:.2f} | {r['MBps']:.0f} | {paired} | {best} "
            f"| {r['min_cpu_s']:.1f} |"
        )
    return rows


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
