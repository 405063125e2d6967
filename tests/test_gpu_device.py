"""GPU tests: chunks encoded with nvCOMP on the device decode bit-exactly with stock CPU zarr.

Skipped cleanly without cupy or without a usable GPU/nvCOMP (see ``gpu_status()``).
Runnable with ``PYTHONPATH=src`` and no install of this package.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy")

from hdmf_zarr_parallel.gpu.status import gpu_status  # noqa: E402

_STATUS = gpu_status()
if not _STATUS.available:
    pytest.skip(f"GPU path not available: {_STATUS.reason}", allow_module_level=True)

import numcodecs  # noqa: E402
import zarr  # noqa: E402
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec  # noqa: E402
from zarr.storage import LocalStore  # noqa: E402

from conftest import walk  # noqa: E402
from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder  # noqa: E402
from hdmf_zarr_parallel.gpu.plan import GpuCodecPlan, classify  # noqa: E402
from hdmf_zarr_parallel.rows import chunk_matrix, fill_rows  # noqa: E402
from hdmf_zarr_parallel.shard_layout import build_shard  # noqa: E402


def pad_to_chunk(data, chunk_shape, fill_value, dtype=None):
    """A device chunk of ``chunk_shape`` from ``data``, padded with the fill value (test helper)."""
    dtype = np.dtype(dtype) if dtype is not None else data.dtype
    out = cupy.full(tuple(chunk_shape), fill_value if fill_value is not None else 0, dtype=dtype)
    out[tuple(slice(0, s) for s in data.shape)] = data
    return out


def is_fill_chunks(chunks, fill_value):
    """Which device chunks hold only the fill value, through the engine's own ``fill_rows``."""
    if not chunks:
        return []
    return list(fill_rows(cupy, cupy.stack([c.reshape(-1) for c in chunks]), fill_value))


ALGOS = ["zstd", "gzip", "lz4", "zlib"]
DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64"]
CHUNK_SHAPES = [(4096,), (64, 384), (37, 101), (3, 17, 29), (1 << 18,)]


def _compressor(algo):
    return {
        "zstd": ZstdCodec(level=3),
        "gzip": GzipCodec(level=5),
        "lz4": zarr.codecs.numcodecs.LZ4(),
        "zlib": zarr.codecs.numcodecs.Zlib(level=4),
    }[algo]


def _cpu_codec(algo):
    return {"zstd": numcodecs.Zstd(), "gzip": numcodecs.GZip(), "lz4": numcodecs.LZ4(), "zlib": numcodecs.Zlib()}[algo]


def _chunk_selections(shape, chunk_shape):
    grid = [math.ceil(s / c) for s, c in zip(shape, chunk_shape, strict=True)]
    for coords in itertools.product(*(range(g) for g in grid)):
        sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, chunk_shape, shape, strict=True))
        yield coords, sel


def _write(root: Path, name: str, arr, coords, blob) -> None:
    path = root / name / arr.metadata.encode_chunk_key(coords)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))


def _create(store, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(store, **kw)


@pytest.mark.parametrize("chunk_shape", CHUNK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ALGOS)
def test_gpu_chunks_read_by_cpu_zarr(tmp_path, algo, dtype, chunk_shape):
    # two full chunks per dimension plus a partial edge chunk
    shape = tuple(2 * c + max(1, c // 3) for c in chunk_shape)
    if math.prod(shape) * np.dtype(dtype).itemsize > (48 << 20):
        shape = tuple(c + max(1, c // 3) for c in chunk_shape)
    store = LocalStore(tmp_path, read_only=False)
    arr = _create(
        store, name="a", shape=shape, dtype=dtype, chunks=chunk_shape, compressors=_compressor(algo), fill_value=0
    )
    plan = classify(arr)
    assert isinstance(plan, GpuCodecPlan), plan
    data = walk(shape, dtype, seed=len(shape) * 7 + np.dtype(dtype).itemsize)

    sels = list(_chunk_selections(shape, chunk_shape))
    dev_chunks = [
        pad_to_chunk(cupy.asarray(data[sel]), plan.chunk_shape, plan.fill_value, plan.dtype) for _, sel in sels
    ]
    with NvcompBatchEncoder(plan) as enc:
        blobs = enc.encode(dev_chunks)  # ONE batched call for all chunks
    assert len(blobs) == len(sels)

    cpu = _cpu_codec(algo)
    for (coords, _sel), dev, blob in zip(sels, dev_chunks, blobs, strict=True):
        expected = cupy.asnumpy(dev).tobytes()
        assert bytes(cpu.decode(bytes(blob))) == expected, f"chunk {coords} does not decode bit-exactly"
        if algo == "gzip":
            assert bytes(blob[:2]) == b"\x1f\x8b"
        _write(tmp_path, "a", arr, coords, blob)

    got = zarr.open_array(LocalStore(tmp_path, read_only=True), path="a")[...]
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("with_crc", [True, False])
@pytest.mark.parametrize("index_location", ["end", "start"])
@pytest.mark.parametrize("algo", ALGOS)
def test_gpu_sharded_read_by_cpu_zarr(tmp_path, algo, index_location, with_crc):
    shape, shard_shape, inner = (250, 96), (100, 96), (25, 32)
    fill = -7
    index_codecs = [BytesCodec(), Crc32cCodec()] if with_crc else [BytesCodec()]
    store = LocalStore(tmp_path, read_only=False)
    arr = _create(
        store,
        name="s",
        shape=shape,
        dtype="int16",
        chunks=shard_shape,
        compressors=None,
        fill_value=fill,
        serializer=ShardingCodec(
            chunk_shape=inner,
            codecs=[BytesCodec(), _compressor(algo)],
            index_codecs=index_codecs,
            index_location=index_location,
        ),
    )
    plan = classify(arr)
    assert isinstance(plan, GpuCodecPlan) and plan.sharded
    data = walk(shape, "int16", seed=3)
    data[0:25, 0:64] = fill  # two all-fill inner chunks in the first shard
    data[100:200, :] = fill  # the whole second shard is fill: must not be written

    enc = NvcompBatchEncoder(plan)
    written = 0
    try:
        for shard_coords, shard_sel in _chunk_selections(shape, shard_shape):
            inner_devs, slots = [], []
            for inner_coords in itertools.product(*(range(n) for n in plan.chunks_per_shard)):
                start = [s.start + i * c for s, i, c in zip(shard_sel, inner_coords, inner, strict=True)]
                if any(st >= dim for st, dim in zip(start, shape, strict=True)):
                    slots.append(None)
                    continue
                sel = tuple(slice(st, min(st + c, dim)) for st, c, dim in zip(start, inner, shape, strict=True))
                slots.append(len(inner_devs))
                inner_devs.append(pad_to_chunk(cupy.asarray(data[sel]), inner, fill, plan.dtype))
            empty = is_fill_chunks(inner_devs, fill)
            to_encode = [d for d, e in zip(inner_devs, empty, strict=True) if not e]
            blobs = iter(enc.encode(to_encode))
            encoded = [None if slot is None or empty[slot] else next(blobs) for slot in slots]
            shard = build_shard(encoded, plan.chunks_per_shard, plan.index_location, plan.index_crc32c)
            if shard is None:
                assert shard_coords == (1, 0)
                continue
            _write(tmp_path, "s", arr, shard_coords, shard)
            written += 1
    finally:
        enc.close()
    assert written == 2
    assert not (tmp_path / "s" / arr.metadata.encode_chunk_key((1, 0))).exists()
    got = zarr.open_array(LocalStore(tmp_path, read_only=True), path="s")[...]
    np.testing.assert_array_equal(got, data)


def test_chunk_matrix_and_fill_rows_on_the_device_match_the_host():
    """The engine's carving and empty-chunk rule give the same answer with cupy as with numpy."""
    rng = np.random.default_rng(3)
    tile = rng.integers(-5, 5, size=(37, 50)).astype("int16")
    tile[:16] = 0
    for units, inner, chunk in (((3, 2), (1, 1), (16, 32)), ((3, 1), (2, 4), (8, 16))):
        host = chunk_matrix(np, tile, units, inner, chunk, 0)
        device = chunk_matrix(cupy, cupy.asarray(tile), units, inner, chunk, 0)
        np.testing.assert_array_equal(cupy.asnumpy(device), host)
        rows_h, rows_d = host.reshape(-1, host.shape[2]), device.reshape(-1, device.shape[2])
        np.testing.assert_array_equal(fill_rows(cupy, rows_d, 0), fill_rows(np, rows_h, 0))
    floats = cupy.asarray(np.array([[np.nan, np.nan], [np.nan, 1.0], [-0.0, -0.0], [0.0, 0.0]], "float32"))
    assert list(fill_rows(cupy, floats, float("nan"))) == [True, False, False, False]
    assert list(fill_rows(cupy, floats, 0.0)) == [False, False, False, True]  # -0.0 is not a 0.0 fill


def test_encoder_lifecycle_and_validation():
    arr = _create(zarr.storage.MemoryStore(), shape=(1000,), dtype="int16", chunks=(100,), compressors=ZstdCodec())
    plan = classify(arr)
    chunk = cupy.asarray(walk((100,), "int16"))
    stream = cupy.cuda.Stream(non_blocking=True)
    enc = NvcompBatchEncoder(plan, stream=stream)
    assert enc.encode([]) == []
    views = enc.encode([chunk, chunk], copy=False)
    assert bytes(numcodecs.Zstd().decode(bytes(views[1]))) == cupy.asnumpy(chunk).tobytes()
    with pytest.raises(ValueError):
        enc.encode([cupy.zeros((99,), dtype=cupy.int16)])
    with pytest.raises(ValueError):
        enc.encode([cupy.zeros((100,), dtype=cupy.float32)])
    if cupy.ndarray is not np.ndarray:  # host arrays are refused
        with pytest.raises(TypeError):
            enc.encode([np.zeros(100, dtype=np.int16)])
    # non-contiguous input is made contiguous
    strided = cupy.asarray(walk((200,), "int16"))[::2]
    out = enc.encode([strided])
    assert bytes(numcodecs.Zstd().decode(bytes(out[0]))) == cupy.asnumpy(strided).tobytes()
    enc.close()
    enc.close()  # idempotent
    with pytest.raises(RuntimeError):
        enc.encode([chunk])


@pytest.mark.parametrize("algo", ALGOS)
def test_unaligned_views_of_one_buffer(algo):
    """Odd-sized chunks sliced out of one device buffer (unaligned addresses) still encode right."""
    arr = _create(
        zarr.storage.MemoryStore(),
        shape=(37 * 101 * 6,),
        dtype="int16",
        chunks=(37 * 101,),
        compressors=_compressor(algo),
    )
    plan = classify(arr)
    n = 37 * 101
    buf = cupy.asarray(walk((6 * n + 1,), "int16", seed=5))
    views = [buf[1 + i * n : 1 + (i + 1) * n] for i in range(6)]
    with NvcompBatchEncoder(plan) as enc:
        blobs = enc.encode(views)
    cpu = _cpu_codec(algo)
    for v, blob in zip(views, blobs, strict=True):
        assert bytes(cpu.decode(bytes(blob))) == cupy.asnumpy(v).tobytes()


@pytest.mark.parametrize("algo", ALGOS)
def test_big_batch_of_1mib_chunks(algo):
    """64 x 1 MiB int16 chunks in one call, as the engine will batch them."""
    arr = _create(
        zarr.storage.MemoryStore(), shape=(64 << 19,), dtype="int16", chunks=(1 << 19,), compressors=_compressor(algo)
    )
    plan = classify(arr)
    data = cupy.asarray(walk((64 << 19,), "int16", seed=11))
    chunks = [data[i << 19 : (i + 1) << 19] for i in range(64)]
    with NvcompBatchEncoder(plan) as enc:
        blobs = enc.encode(chunks)
    cpu = _cpu_codec(algo)
    host = cupy.asnumpy(data)
    for i, blob in enumerate(blobs):
        assert bytes(cpu.decode(bytes(blob))) == host[i << 19 : (i + 1) << 19].tobytes()
    ratio = data.nbytes / sum(len(b) for b in blobs)
    assert ratio > 1.0


@pytest.mark.parametrize("chunk_shape", [(64, 384), (37, 101)], ids=["aligned-rows", "odd-rows"])
@pytest.mark.parametrize("algo", ALGOS)
def test_encode_rows_reads_the_chosen_rows_of_one_matrix(algo, chunk_shape):
    """The engine's call: rows of a chunk matrix, read in place (or through a padded copy
    when a row's size is not aligned), encoded into nvCOMP's pre-allocated output."""
    n = math.prod(chunk_shape)
    arr = _create(
        zarr.storage.MemoryStore(), shape=(12 * n,), dtype="int16", chunks=(n,), compressors=_compressor(algo)
    )
    plan = classify(arr)
    host = walk((12, n), "int16", seed=21)
    rows = cupy.asarray(host)
    picked = [0, 3, 4, 10, 11]
    cpu = _cpu_codec(algo)
    with NvcompBatchEncoder(plan) as enc:
        for _ in range(2):  # the first call checks the pre-allocated output, the second uses it
            blobs = enc.encode_rows(rows, picked)
            assert len(blobs) == len(picked)
            for i, blob in zip(picked, blobs, strict=True):
                assert bytes(cpu.decode(bytes(blob))) == host[i].tobytes()
        assert enc.preallocated_output is True, "nvCOMP did not encode into the pre-allocated buffer"
        assert enc.encode_rows(rows, []) == []
        with pytest.raises(IndexError):
            enc.encode_rows(rows, [12])
        with pytest.raises(ValueError):
            enc.encode_rows(rows[:, :-1], [0])
        with pytest.raises(TypeError):
            enc.encode_rows(host, [0])


def test_shuffle_and_adler32_on_the_device_match_the_host():
    """The byte shuffle and zlib's Adler-32 with cupy give what numpy (and numcodecs, zlib) give."""
    import zlib

    from hdmf_zarr_parallel.gpu.framing import adler32_rows
    from hdmf_zarr_parallel.rows import shuffle_rows

    host = walk((9, 70_001), "int32", seed=4)
    device = cupy.asarray(host)
    assert cupy.asnumpy(shuffle_rows(cupy, device, 4)).tobytes() == shuffle_rows(np, host, 4).tobytes()
    assert bytes(cupy.asnumpy(shuffle_rows(cupy, device, 4))[0]) == bytes(
        numcodecs.Shuffle(elementsize=4).encode(host[0])
    )
    as_bytes = device.view(cupy.uint8)
    assert list(adler32_rows(cupy, as_bytes)) == [zlib.adler32(row.tobytes()) for row in host]
