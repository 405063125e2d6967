"""Blosc on a real device: blocks shuffled by cupy, compressed by nvCOMP, framed on the host, and
decoded exactly by numcodecs, tensorstore and zarrs; zstd and gzip chunks one frame / member.

The same checks as ``test_gpu_blosc_cpu.py`` (host lane) and ``test_gpu_fake_device.py``
(the device code on a fake nvCOMP), with nvCOMP's own output. Skipped without a usable GPU.
"""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from conftest import NumpyIterator, make_array, realistic
from hdmf_zarr_parallel.gpu.status import gpu_status

pytestmark = pytest.mark.gpu

if not gpu_status().available:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy  # noqa: E402

from hdmf_zarr_parallel.gpu import blosc_frame as bf  # noqa: E402
from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder  # noqa: E402
from hdmf_zarr_parallel.gpu.engine import GpuEngine  # noqa: E402
from hdmf_zarr_parallel.gpu.plan import GpuCodecPlan, classify  # noqa: E402
from hdmf_zarr_parallel.options import WriteOptions  # noqa: E402
from hdmf_zarr_parallel.write.dataset import DatasetWrite  # noqa: E402
from hdmf_zarr_parallel.write.pipeline import write_datasets  # noqa: E402
from independent_readers import assert_read_by_all, gzip_members, zstd_frames  # noqa: E402

DTYPES = ["u1", "i2", "u2", "i4", "f4", "f8"]
SHUFFLES = ["noshuffle", "shuffle", "bitshuffle"]


@pytest.mark.parametrize("shuffle", [bf.SHUFFLE, bf.BITSHUFFLE])
@pytest.mark.parametrize("typesize", [1, 2, 3, 4, 8, 16])
def test_device_shuffle_equals_the_host_shuffle(shuffle, typesize):
    """cupy's reshapes, uint64 views and shifts give the bytes numpy gives (those match c-blosc's)."""
    rows = np.random.default_rng(typesize).integers(0, 256, size=(3, 1_000_003), dtype="u1")
    lay = bf.layout(bf.BloscParams("lz4", 5, shuffle, typesize), rows.shape[1])
    on_device = bf.shuffle_blocks(cupy, cupy.asarray(rows), lay).get()
    np.testing.assert_array_equal(on_device, bf.shuffle_blocks(np, rows, lay))


@pytest.mark.parametrize("cname", ["zstd", "lz4"])
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nvcomp_blosc_chunks_decode_exactly(cname, shuffle, dtype, record_property):
    itemsize = np.dtype(dtype).itemsize
    for elements in (2_000_000 // itemsize, 100_001, 1000 // itemsize):  # many blocks; one block
        array = zarr.create_array(
            zarr.storage.MemoryStore(), shape=(4, elements), chunks=(1, elements), dtype=dtype,
            compressors=BloscCodec(cname=cname, shuffle=shuffle),
        )  # fmt: skip
        plan = classify(array)
        assert isinstance(plan, GpuCodecPlan), plan
        rows = np.stack([realistic((elements,), dtype, seed=i) for i in range(4)])
        rows[1] = np.random.default_rng(1).integers(0, 256, size=rows[1].nbytes, dtype="u1").view(dtype)
        rows[2] = 0
        rows[3, elements // 2 :] = rows[1, elements // 2 :]
        encoder = NvcompBatchEncoder(plan)
        assert encoder._align <= bf.ALIGN, "Blosc streams start on 16-byte boundaries"
        chunks = [bytes(c) for c in encoder.encode_rows(cupy.asarray(rows), [0, 1, 2, 3])]
        encoder.close()
        for row, chunk in zip(rows, chunks, strict=True):
            assert bytes(numcodecs.Blosc().decode(chunk)) == row.tobytes()
        assert chunks[1][2] & bf.MEMCPYED and len(chunks[1]) == rows[1].nbytes + 16
        cpu = len(array.metadata.codecs[1]._blosc_codec.encode(rows[0]))
        record_property(f"ratio_vs_cblosc_{elements}", round(len(chunks[0]) / cpu, 3))
        assert len(chunks[0]) < 1.5 * cpu + 64


@pytest.mark.parametrize("cname", ["zstd", "lz4"])
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("shards", [None, (512, 96)])
def test_gpu_write_of_blosc_reads_back_with_zarr_zarrs_and_tensorstore(tmp_path, cname, shuffle, shards):
    data = realistic((1003, 97), "int16", seed=7)
    data[:128] = 0
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    compressor = BloscCodec(cname=cname, shuffle=shuffle)
    chunks = (128, 96) if shards else (300, 97)  # partial edge chunks either way
    array = make_array(store, data.shape, data.dtype, chunks, shards, compressors=compressor)
    engine = GpuEngine(4, 1 << 20, lanes=2)
    write_datasets([DatasetWrite(array, NumpyIterator(data, buffer_shape=(256, 97)))], engine, WriteOptions())
    assert_read_by_all(tmp_path / "a.zarr", data, require=False)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("shape", [(2048, 1024), (3072, 4096)])  # one chunk of 4 MiB, of 24 MiB
def test_nvcomp_zstd_and_gzip_chunks_are_one_frame_whatever_their_size(tmp_path, codec, shape):
    data = realistic(shape, "int16", seed=3)
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    compressor = ZstdCodec(level=3) if codec == "zstd" else GzipCodec(level=1)
    array = make_array(store, data.shape, data.dtype, shape, compressors=compressor)
    engine = GpuEngine(4, 32 << 20, lanes=2)
    write_datasets([DatasetWrite(array, NumpyIterator(data, buffer_shape=shape))], engine, WriteOptions())
    blob = (tmp_path / "a.zarr" / "c" / "0" / "0").read_bytes()
    assert (zstd_frames if codec == "zstd" else gzip_members)(blob) == 1
    assert_read_by_all(tmp_path / "a.zarr", data, require=False)
