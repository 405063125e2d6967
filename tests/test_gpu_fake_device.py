"""The device code (``NvcompBatchEncoder``, ``NvcompLane``) run on a fake cupy and nvCOMP (no GPU).

:mod:`fake_device` stands in for cupy (numpy arrays with device pointers) and for nvCOMP
(numcodecs / zlib write what nvCOMP's RAW bitstream holds). What runs for real is the code a
device runs around nvCOMP: one batched call per encode with an offset table over the
(shuffled) rows, pre-allocated output slots, one D2H copy, and the framing, Blosc's included.
Skipped where the real cupy is installed (the ``gpu`` tests run there).
"""

from __future__ import annotations

import importlib.util
import warnings

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Zlib

import fake_device
from conftest import NumpyIterator, make_array, realistic
from hdmf_zarr_parallel.gpu import blosc_frame as bf
from hdmf_zarr_parallel.gpu.plan import GpuCodecPlan, classify
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets
from independent_readers import assert_read_by_all, gzip_members, zstd_frames

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="the real cupy is installed")


@pytest.fixture
def fake(monkeypatch):
    fake_device.install(monkeypatch)
    monkeypatch.setattr(bf, "STREAM_NBYTES", 2048)  # many blocks in small chunks
    bf.layout.cache_clear()
    fake_device._Codec.calls.clear()
    yield fake_device
    bf.layout.cache_clear()


COMPRESSORS = {
    "zstd": ZstdCodec(level=3),
    "gzip": GzipCodec(level=1),
    "lz4": LZ4(),
    "zlib": Zlib(level=1),
    "blosc-zstd-shuffle": BloscCodec(cname="zstd", shuffle="shuffle"),
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", shuffle="shuffle"),
    "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", shuffle="bitshuffle"),
    "blosc-zstd-noshuffle": BloscCodec(cname="zstd", shuffle="noshuffle"),
}


@pytest.mark.parametrize("name", list(COMPRESSORS))
@pytest.mark.parametrize("dtype", ["u1", "i2", "f4", "f8"])
def test_encoder_batches_and_frames_on_the_fake_device(fake, name, dtype):
    from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder

    cupy = __import__("cupy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = zarr.create_array(
            zarr.storage.MemoryStore(), shape=(6, 3001), chunks=(1, 3001), dtype=dtype, compressors=COMPRESSORS[name]
        )
    plan = classify(array)
    assert isinstance(plan, GpuCodecPlan), plan
    rows = np.stack([realistic((3001,), dtype, seed=i) for i in range(6)])
    rows[3] = np.random.default_rng(3).integers(0, 256, size=rows[3].nbytes, dtype="u1").view(dtype)  # random
    rows[4, 1500:] = rows[3, 1500:]  # half random: raw streams in a compressed Blosc chunk
    encoder = NvcompBatchEncoder(plan, stream=fake._Stream())
    picked = [5, 0, 3, 4, 1]
    chunks = encoder.encode_rows(cupy.asarray(rows), picked)
    assert encoder.preallocated_output is True, "nvCOMP wrote into our output slots"
    streams = len(encoder._sizes)
    assert fake._Codec.calls == [(fake._Codec.calls[0][0], streams * len(picked))], "one batched call"
    for i, chunk in zip(picked, chunks, strict=True):
        chunk = bytes(chunk)
        if name.startswith("blosc"):
            assert bytes(numcodecs.Blosc().decode(chunk)) == rows[i].tobytes()
            assert streams > 1
        elif name == "zlib":
            assert bytes(numcodecs.Zlib().decode(chunk)) == rows[i].tobytes()
        else:
            codec = {"zstd": numcodecs.Zstd(), "gzip": numcodecs.GZip(), "lz4": numcodecs.LZ4()}[name]
            assert bytes(codec.decode(chunk)) == rows[i].tobytes()
            assert streams == 1
            if name == "zstd":
                assert zstd_frames(chunk) == 1
            if name == "gzip":
                assert gzip_members(chunk) == 1


@pytest.mark.parametrize("name", [n for n in COMPRESSORS if n.startswith("blosc")] + ["zstd", "gzip"])
@pytest.mark.parametrize("shards", [None, (64, 60)])
def test_gpu_engine_with_nvcomp_lanes_on_the_fake_device(fake, tmp_path, name, shards):
    from hdmf_zarr_parallel.gpu.engine import GpuEngine

    data = realistic((301, 77), "int16", seed=1)
    data[:32] = 0
    data[32:64, :20] = np.random.default_rng(0).integers(-(2**15), 2**15, size=(32, 20), dtype="i2")
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    array = make_array(store, data.shape, data.dtype, (32, 20), shards, compressors=COMPRESSORS[name])
    engine = GpuEngine(2, 32 << 10, lanes=2)  # NvcompLane, the real lane class
    write_datasets([DatasetWrite(array, NumpyIterator(data, buffer_shape=(100, 77)))], engine, WriteOptions())
    assert fake._Codec.calls, "the lanes encoded with (fake) nvCOMP"
    assert_read_by_all(tmp_path / "a.zarr", data)
