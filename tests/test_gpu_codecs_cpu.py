"""CPU-only tests of the GPU path's host-side pieces (run in CI, no GPU needed).

* numcodecs LZ4 framing helpers against numcodecs' own output;
* shard assembly (``build_shard``) verified by stock zarr, tensorstore and zarrs reading the shards back;
* codec-chain classification (``classify``) for supported and unsupported arrays;
* ``gpu_status()`` without a GPU, and that importing the package never imports cupy,
  nvidia.nvcomp or kvikio, nor a write with a CPU engine any GPU module but the status probe.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from conftest import walk
from hdmf_zarr_parallel.gpu import framing
from hdmf_zarr_parallel.gpu.plan import GpuCodecPlan, Unsupported, classify
from hdmf_zarr_parallel.gpu.status import GpuStatus, gpu_status
from hdmf_zarr_parallel.shard_layout import (
    EMPTY,
    build_shard,
    build_shards,
    crc32c,
    parse_shard_index,
    shard_index_nbytes,
)
from readers import assert_independent_readers_match

SRC = Path(__file__).resolve().parents[1] / "src"


def _lz4_codec():
    return zarr.codecs.numcodecs.LZ4()


# --------------------------------------------------------------------------- LZ4 framing
@pytest.mark.parametrize("nbytes", [1, 100, 65536, 100003, 1 << 20])
def test_lz4_header_matches_numcodecs(nbytes):
    data = walk((max(nbytes // 2, 1),), "int16").tobytes()[:nbytes]
    framed = bytes(numcodecs.LZ4().encode(data))
    n, raw = framing.lz4_split_header(framed)
    assert n == len(data)
    assert framed[:4] == framing.lz4_header(len(data)) == struct.pack("<i", len(data))
    assert bytes(framing.lz4_add_header(raw, n)) == framed
    assert framing.lz4_strip_header(framed) == bytes(raw)
    # a raw block framed by us decodes with stock numcodecs
    assert bytes(numcodecs.LZ4().decode(framing.lz4_add_header(framing.lz4_strip_header(framed), n))) == data


def test_lz4_header_errors():
    with pytest.raises(ValueError):
        framing.lz4_split_header(b"\x01\x02")
    with pytest.raises(ValueError):
        framing.lz4_header(-1)
    with pytest.raises(ValueError):
        framing.lz4_header(2**31)


def test_numcodecs_zstd_reads_frames_without_content_size():
    """nvCOMP may or may not write the zstd frame content size: numcodecs must not need it."""
    data = bytes(range(256)) * 40
    block = ((len(data) << 3) | 1).to_bytes(3, "little")  # last block, raw
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0x00, (17 - 10) << 3]) + block + data
    assert bytes(numcodecs.Zstd().decode(frame)) == data


# --------------------------------------------------------------------------- crc32c / index
def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283


def test_build_shard_layout_and_parse():
    chunks = [b"aaa", None, b"", b"bbbbb"]
    for loc, crc in itertools.product(("start", "end"), (True, False)):
        shard = build_shard(chunks, (2, 2), loc, crc)
        idx_n = shard_index_nbytes((2, 2), crc)
        assert len(shard) == 8 + idx_n
        index = parse_shard_index(shard, (2, 2), loc, crc)
        base = idx_n if loc == "start" else 0
        assert index[0, 0].tolist() == [base, 3]
        assert index[0, 1].tolist() == [EMPTY, EMPTY]
        assert index[1, 0].tolist() == [EMPTY, EMPTY]
        assert index[1, 1].tolist() == [base + 3, 5]
        assert shard[base : base + 8] == b"aaabbbbb"


def test_build_shards_hands_on_the_chunks_themselves():
    """Each shard of build_shards is its stored chunks (the very objects given, no copy) and its index,
    in file order; joined, it is build_shard's bytes; a shard of empty chunks only is None."""
    chunks = [memoryview(b"aaa"), None, b"", memoryview(b"bbbbb"), None, None, None, None]
    for loc, crc in itertools.product(("start", "end"), (True, False)):
        first, empty = build_shards(chunks, (2, 2), loc, crc, order=[3, 0, 1, 2])
        assert empty is None
        body = first.pieces[1:] if loc == "start" else first.pieces[:-1]
        assert [id(p) for p in body] == [id(chunks[3]), id(chunks[0])]
        assert bytes(first) == build_shard(chunks[:4], (2, 2), loc, crc, order=[3, 0, 1, 2])
        assert first.nbytes == len(bytes(first)) == 8 + shard_index_nbytes((2, 2), crc)


def test_build_shard_all_empty_and_errors():
    assert build_shard([None, b"", None], (3,), "end", True) is None
    with pytest.raises(ValueError):
        build_shard([b"x"], (2,), "end", True)
    with pytest.raises(ValueError):
        build_shard([b"x"], (1,), "middle", True)  # type: ignore[arg-type]


def test_parse_shard_index_detects_bad_crc():
    shard = bytearray(build_shard([b"abc"], (1,), "end", True))
    shard[-1] ^= 0xFF
    with pytest.raises(ValueError):
        parse_shard_index(bytes(shard), (1,), "end", True)


# --------------------------------------------------------------------------- shards read by zarr
def _cpu_encoder(compressor):
    if isinstance(compressor, ZstdCodec):
        return numcodecs.Zstd(level=compressor.level).encode
    if isinstance(compressor, GzipCodec):
        return numcodecs.GZip(level=compressor.level).encode
    return numcodecs.LZ4().encode


def _write_sharded_by_hand(
    root: Path, name: str, arr: zarr.Array, data: np.ndarray, empty_every: int = 0
) -> np.ndarray:
    """Encode inner chunks with the CPU codecs, assemble shards with build_shard, write them
    as files of a LocalStore. Returns what zarr must read back."""
    plan = classify(arr)
    assert isinstance(plan, GpuCodecPlan) and plan.sharded
    encode = _cpu_encoder(arr.metadata.codecs[0].codecs[1])
    fill = plan.fill_value
    expected = data.copy()
    shard_shape, inner = plan.shard_shape, plan.chunk_shape
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, shard_shape, strict=True)]
    counter = 0
    for shard_coords in itertools.product(*(range(g) for g in grid)):
        shard_start = [c * s for c, s in zip(shard_coords, shard_shape, strict=True)]
        encoded = []
        for inner_coords in itertools.product(*(range(n) for n in plan.chunks_per_shard)):
            start = [s + i * c for s, i, c in zip(shard_start, inner_coords, inner, strict=True)]
            if any(st >= dim for st, dim in zip(start, arr.shape, strict=True)):
                encoded.append(None)  # wholly outside the array
                continue
            sel = tuple(slice(st, min(st + c, dim)) for st, c, dim in zip(start, inner, arr.shape, strict=True))
            counter += 1
            if empty_every and counter % empty_every == 0:
                expected[sel] = fill
                encoded.append(None)
                continue
            block = np.full(inner, fill, dtype=plan.dtype)
            block[tuple(slice(0, s.stop - s.start) for s in sel)] = data[sel]
            encoded.append(bytes(encode(block.tobytes())))
        shard = build_shard(encoded, plan.chunks_per_shard, plan.index_location, plan.index_crc32c)
        if shard is None:
            continue
        path = root / name / arr.metadata.encode_chunk_key(shard_coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shard)
    return expected


SHARD_CASES = [
    # shape, shard shape, inner chunk shape, dtype
    ((250, 96), (100, 96), (25, 32), "int16"),
    ((1000,), (300,), (60,), "float32"),
    ((37, 41, 5), (20, 21, 5), (10, 7, 5), "uint16"),
    ((64, 64), (64, 64), (16, 16), "float64"),
    ((10,), (9,), (3,), "uint8"),  # inner chunks wholly outside the array in the edge shard
]


@pytest.mark.parametrize("index_location", ["start", "end"])
@pytest.mark.parametrize("with_crc", [True, False])
@pytest.mark.parametrize("compressor", ["zstd", "gzip", "lz4"])
@pytest.mark.parametrize("case", SHARD_CASES, ids=[f"{c[0]}-{c[3]}" for c in SHARD_CASES])
def test_build_shard_read_back_by_zarr(tmp_path, subtests, case, compressor, with_crc, index_location):
    shape, shard_shape, inner, dtype = case
    comp = {"zstd": ZstdCodec(level=3), "gzip": GzipCodec(level=5), "lz4": _lz4_codec()}[compressor]
    index_codecs = [BytesCodec(), Crc32cCodec()] if with_crc else [BytesCodec()]
    store = LocalStore(tmp_path, read_only=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = zarr.create_array(
            store,
            name="a",
            shape=shape,
            dtype=dtype,
            chunks=shard_shape,
            compressors=None,
            fill_value=3,
            serializer=ShardingCodec(
                chunk_shape=inner, codecs=[BytesCodec(), comp], index_codecs=index_codecs, index_location=index_location
            ),
        )
    plan = classify(arr)
    assert isinstance(plan, GpuCodecPlan)
    assert plan.index_crc32c is with_crc and plan.index_location == index_location
    data = walk(shape, dtype, seed=zlib.crc32(repr(case).encode()) % 1000)  # the same data every run
    expected = _write_sharded_by_hand(tmp_path, "a", arr, data, empty_every=4)
    got = zarr.open_array(LocalStore(tmp_path, read_only=True), path="a")[...]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.dtype(dtype)
    assert_independent_readers_match(tmp_path / "a", expected, subtests)


def test_all_empty_shard_is_not_written(tmp_path, subtests):
    store = LocalStore(tmp_path, read_only=False)
    arr = zarr.create_array(store, name="a", shape=(20,), dtype="int16", chunks=(10,), shards=(20,), fill_value=-1)
    plan = classify(arr)
    assert build_shard([None, None], plan.chunks_per_shard, plan.index_location, plan.index_crc32c) is None
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[...], np.full(20, -1, dtype="int16"))
    assert_independent_readers_match(tmp_path / "a", np.full(20, -1, dtype="int16"), subtests)


# --------------------------------------------------------------------------- classification
def _mk(**kw):
    kw.setdefault("shape", (100, 64))
    kw.setdefault("chunks", (10, 16))
    kw.setdefault("dtype", "int16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(MemoryStore(), **kw)


SUPPORTED = [
    ("zstd-default", {}, "zstd", False),
    ("zstd-level", {"compressors": ZstdCodec(level=7)}, "zstd", False),
    ("gzip", {"compressors": GzipCodec(level=5)}, "gzip", False),
    ("lz4", {"compressors": zarr.codecs.numcodecs.LZ4()}, "lz4", False),
    ("numcodecs-zstd", {"compressors": zarr.codecs.numcodecs.Zstd(level=2)}, "zstd", False),
    ("numcodecs-gzip", {"compressors": zarr.codecs.numcodecs.GZip(level=3)}, "gzip", False),
    ("sharded-zstd", {"shards": (50, 64)}, "zstd", True),
    ("sharded-gzip", {"shards": (20, 32), "compressors": GzipCodec()}, "gzip", True),
    ("sharded-lz4", {"shards": (100, 64), "compressors": zarr.codecs.numcodecs.LZ4()}, "lz4", True),
    ("big-endian-dtype", {"dtype": ">i4"}, "zstd", False),  # stored little-endian by the bytes codec
    ("uint8", {"dtype": "uint8"}, "zstd", False),
    ("bool", {"dtype": "bool"}, "zstd", False),
    ("float32", {"dtype": "float32", "fill_value": float("nan")}, "zstd", False),
    ("complex64", {"dtype": "complex64"}, "zstd", False),
    ("zlib", {"compressors": zarr.codecs.numcodecs.Zlib(level=4)}, "zlib", False),
    (
        "hdf5-shuffle-zlib",  # what hdmf-zarr makes of HDF5's shuffle + gzip filters
        {"compressors": [zarr.codecs.numcodecs.Shuffle(elementsize=2), zarr.codecs.numcodecs.Zlib(level=4)]},
        "zlib",
        False,
    ),
    ("shuffle-zstd", {"compressors": [zarr.codecs.numcodecs.Shuffle(elementsize=2), ZstdCodec()]}, "zstd", False),
    (
        "sharded-shuffle-lz4",
        {
            "shards": (50, 64),
            "compressors": [zarr.codecs.numcodecs.Shuffle(elementsize=2), zarr.codecs.numcodecs.LZ4()],
        },
        "lz4",
        True,
    ),
]


@pytest.mark.parametrize("label,kw,algo,sharded", SUPPORTED, ids=[s[0] for s in SUPPORTED])
def test_classify_supported(label, kw, algo, sharded):
    arr = _mk(**kw)
    plan = classify(arr)
    assert isinstance(plan, GpuCodecPlan), plan
    assert plan.algorithm == algo
    assert plan.sharded is sharded
    assert plan.chunk_shape == tuple(arr.chunks)  # the inner chunk shape when sharded
    assert plan.dtype.itemsize == arr.dtype.itemsize
    assert plan.dtype.byteorder in ("<", "|", "=")
    assert plan.chunk_nbytes == math.prod(arr.chunks) * arr.dtype.itemsize
    if sharded:
        assert plan.shard_shape == tuple(arr.shards)
        assert plan.chunks_per_shard == tuple(s // c for s, c in zip(arr.shards, arr.chunks, strict=True))
        assert plan.index_location == "end" and plan.index_crc32c is True
    else:
        assert plan.shard_shape is None and plan.chunks_per_shard is None
    if label == "zstd-level":
        assert plan.level == 7
    assert plan.shuffle_elementsize == (2 if "shuffle" in label else None)


UNSUPPORTED = [
    ("blosclz", {"compressors": zarr.codecs.BloscCodec(cname="blosclz")}, "blosc"),  # blosc: test_gpu_blosc_cpu
    ("numcodecs-blosc-zlib", {"compressors": zarr.codecs.numcodecs.Blosc(cname="zlib")}, "blosc"),
    ("zstd-checksum", {"compressors": ZstdCodec(checksum=True)}, "checksum"),
    ("transpose", {"filters": [zarr.codecs.TransposeCodec(order=(1, 0))]}, "transpose"),
    ("delta", {"filters": [zarr.codecs.numcodecs.Delta(dtype="int16")]}, "array-to-array"),
    ("shuffle-alone", {"compressors": zarr.codecs.numcodecs.Shuffle()}, "shuffle"),
    (
        "shuffle-partial-elements",  # 10 x 16 int16 = 320 bytes, not a whole number of 3-byte elements
        {"compressors": [zarr.codecs.numcodecs.Shuffle(elementsize=3), ZstdCodec()]},
        "whole number",
    ),
    ("big-endian-bytes", {"serializer": BytesCodec(endian="big")}, "big-endian"),
    ("no-compressor", {"compressors": None}, "no compressor"),
    ("two-compressors", {"compressors": [ZstdCodec(), Crc32cCodec()]}, "more than one"),
    ("vlen-str", {"dtype": str}, "string"),
    ("fixed-unicode", {"dtype": "U4"}, "string"),
    ("bytes-S", {"dtype": "S4"}, "dtype"),
    ("compound", {"dtype": [("a", "i2"), ("b", "f4")]}, "structured"),
    ("datetime", {"dtype": "M8[s]"}, "not supported"),
    ("zarr-v2", {"zarr_format": 2}, "format 3"),
    ("bz2", {"compressors": zarr.codecs.numcodecs.BZ2()}, "bz2"),
    ("sharded-blosc-snappy", {"shards": (50, 64), "compressors": zarr.codecs.BloscCodec(cname="snappy")}, "snappy"),
    ("sharded-transpose", {"shards": (50, 64), "filters": [zarr.codecs.TransposeCodec(order=(1, 0))]}, "transpose"),
]


@pytest.mark.parametrize("label,kw,needle", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_classify_unsupported(label, kw, needle):
    try:
        arr = _mk(**kw)
    except Exception as exc:  # some combinations zarr itself refuses: nothing to classify
        pytest.skip(f"zarr refuses {label}: {exc}")
    result = classify(arr)
    assert isinstance(result, Unsupported), result
    assert not result
    assert needle.lower() in result.reason.lower(), result.reason


def test_classify_sharded_index_codecs():
    arr = _mk(
        chunks=(50, 64),
        compressors=None,
        serializer=ShardingCodec(
            chunk_shape=(10, 16),
            codecs=[BytesCodec(), ZstdCodec()],
            index_codecs=[BytesCodec(endian="big"), Crc32cCodec()],
        ),
    )
    result = classify(arr)
    assert isinstance(result, Unsupported) and "index" in result.reason


def test_classify_not_an_array():
    assert isinstance(classify(object()), Unsupported)


# --------------------------------------------------------------------------- gpu_status / imports
@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_gpu_status_without_cupy():
    status = gpu_status(refresh=True)
    assert isinstance(status, GpuStatus)
    assert status.available is False and not status
    assert "cupy" in status.reason
    assert gpu_status() is gpu_status()  # cached


def test_gpu_status_disabled_by_env(monkeypatch):
    monkeypatch.setenv("HDMF_ZARR_PARALLEL_DISABLE_GPU", "1")
    try:
        status = gpu_status(refresh=True)
        assert status.available is False
        assert "HDMF_ZARR_PARALLEL_DISABLE_GPU" in status.reason
    finally:
        monkeypatch.delenv("HDMF_ZARR_PARALLEL_DISABLE_GPU")
        gpu_status(refresh=True)


def test_gpu_status_never_raises(monkeypatch):
    import hdmf_zarr_parallel.gpu.status as gs

    def boom():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(gs, "_probe", boom)
    status = gs.gpu_status(refresh=True)
    assert status.available is False and "driver exploded" in status.reason
    monkeypatch.undo()
    gs.gpu_status(refresh=True)


def test_importing_never_imports_gpu_modules():
    code = (
        "import sys, json\n"
        "import hdmf_zarr_parallel\n"
        "import hdmf_zarr_parallel.gpu\n"
        "import hdmf_zarr_parallel.gpu.status\n"
        "import hdmf_zarr_parallel.gpu.plan\n"
        "import hdmf_zarr_parallel.gpu.algorithms\n"
        "import hdmf_zarr_parallel.gpu.framing\n"
        "import hdmf_zarr_parallel.gpu.encoder\n"
        "import hdmf_zarr_parallel.gpu.lanes\n"
        "import hdmf_zarr_parallel.gpu.datapath\n"
        "import hdmf_zarr_parallel.gpu.engine\n"
        "import hdmf_zarr_parallel.gpu.worker_lanes\n"
        "import hdmf_zarr_parallel.shard_layout\n"
        "bad = sorted(m for m in sys.modules if m == 'cupy' or m.startswith(('cupy.', 'cupyx', 'kvikio'))"
        " or m.startswith('nvidia.nvcomp') or m == 'nvidia.libnvcomp')\n"
        "print(json.dumps(bad))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_cpu_write_imports_no_gpu_module_but_the_status_probe():
    """Writes with the CPU engines (``auto`` on a machine without a usable GPU among them) import
    nothing of ``hdmf_zarr_parallel.gpu`` but ``gpu.status``, which ``auto`` asks; nor cupy, nvCOMP, kvikio."""
    code = (
        "import sys, json\n"
        "import numpy as np, zarr\n"
        "from conftest import NumpyIterator, make_array, pipeline_write\n"
        "from hdmf_zarr_parallel.gpu.status import gpu_status\n"
        "engines = ['serial', 'threads'] + ([] if gpu_status().available else ['auto'])\n"
        "data = np.arange(4000, dtype='int16').reshape(200, 20)\n"
        "for engine in engines:\n"
        "    for shards in (None, (100, 20)):\n"
        "        array = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (50, 10), shards)\n"
        "        pipeline_write([(array, NumpyIterator(data, buffer_shape=(60, 20)))], engine=engine)\n"
        "        assert (array[...] == data).all()\n"
        "gpu = sorted(m for m in sys.modules if m.startswith('hdmf_zarr_parallel.gpu.'))\n"
        "bad = sorted(m for m in sys.modules if m == 'cupy' or m.startswith(('cupy.', 'cupyx', 'kvikio'))"
        " or m.startswith('nvidia.nvcomp') or m == 'nvidia.libnvcomp')\n"
        "print(json.dumps([engines, gpu, bad]))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    engines, gpu, bad = json.loads(out.stdout.strip().splitlines()[-1])
    assert "threads" in engines
    assert gpu == ["hdmf_zarr_parallel.gpu.status"]
    assert bad == []


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_encoder_needs_cupy():
    from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder

    plan = classify(_mk())
    with pytest.raises(ImportError):
        NvcompBatchEncoder(plan)
