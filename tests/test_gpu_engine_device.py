"""The GPU engine on a real device: every supported codec × dtype × sharding × buffer alignment,
written with nvCOMP and read back with stock zarr on the CPU, bit-exact."""

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Shuffle, Zlib

from conftest import BlockIterator, NumpyIterator, make_array, realistic
from hdmf_zarr_parallel.gpu.status import gpu_status
from hdmf_zarr_parallel.write.dataset import DatasetWrite

pytestmark = pytest.mark.gpu

if not gpu_status().available:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

from hdmf_zarr_parallel.gpu.engine import GpuEngine  # noqa: E402
from hdmf_zarr_parallel.options import WriteOptions  # noqa: E402
from hdmf_zarr_parallel.write.pipeline import write_datasets  # noqa: E402

CODECS = {"zstd": ZstdCodec(level=3), "gzip": GzipCodec(level=5), "lz4": LZ4(), "zlib": Zlib(level=4)}
DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64", "bool"]


def gpu_write(pairs, batch_bytes=1 << 20):
    options = WriteOptions(engine="gpu", max_workers=4)
    return write_datasets([DatasetWrite(a, i) for a, i in pairs], GpuEngine(4, batch_bytes, lanes=2), options)


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shards", [None, (256, 64)])
@pytest.mark.parametrize("kind", ["aligned", "misaligned", "sequential"])
def test_gpu_write_reads_back_exactly_on_the_cpu(tmp_path, codec, dtype, shards, kind):
    data = realistic((1003, 97), "float64", seed=7)
    data = (data > 0) if dtype == "bool" else data.astype(dtype)
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    array = make_array(store, data.shape, data.dtype, (64, 32), shards, compressors=CODECS[codec])
    iterator = {
        "aligned": lambda: NumpyIterator(data, buffer_shape=(256, 97)),
        "misaligned": lambda: NumpyIterator(data, buffer_shape=(100, 97)),
        "sequential": lambda: BlockIterator(data, (77, 97)),
    }[kind]()
    gpu_write([(array, iterator)])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_nwb_write_with_engine_gpu_and_auto(tmp_path):
    from hdmf_zarr import ZarrDataIO
    from hdmf_zarr.nwb import NWBZarrIO
    from pynwb import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    from hdmf_zarr_parallel import NWBParallelZarrIO, choose_auto_engine

    assert choose_auto_engine()[0] == "gpu"
    data = realistic((60_000, 64))
    for engine in ("gpu", "auto"):
        nwbfile = mock_NWBFile()
        series = ZarrDataIO(NumpyIterator(data, buffer_shape=(20_000, 64)), chunks=(4096, 64))
        nwbfile.add_acquisition(TimeSeries(name="x", data=series, unit="V", rate=30_000.0))
        path = tmp_path / f"{engine}.nwb.zarr"
        with NWBParallelZarrIO(str(path), mode="w", engine=engine) as io:
            io.write(nwbfile)
            assert io.last_write_report.engine.startswith("gpu")
        with NWBZarrIO(str(path), mode="r") as io:
            np.testing.assert_array_equal(io.read().acquisition["x"].data[:], data)


def test_compression_ratio_is_close_to_the_cpu_codecs(tmp_path, record_property):
    data = realistic((262_144, 32))  # 16 MiB ephys-like int16
    ratios = {}
    for codec in CODECS:
        for where in ("gpu", "cpu"):
            store = zarr.storage.LocalStore(tmp_path / f"{codec}-{where}.zarr")
            array = make_array(store, data.shape, data.dtype, (16384, 32), compressors=CODECS[codec])
            if where == "gpu":
                gpu_write([(array, NumpyIterator(data, buffer_shape=(65536, 32)))], batch_bytes=4 << 20)
            else:
                array[...] = data
            stored = sum(p.stat().st_size for p in (store.root / "c").rglob("*") if p.is_file())
            ratios[f"{codec}-{where}"] = data.nbytes / stored
            np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    print("compression ratios:", {k: round(v, 3) for k, v in ratios.items()})
    for codec in CODECS:
        record_property(f"ratio_{codec}", ratios)
        assert ratios[f"{codec}-gpu"] > 0.7 * ratios[f"{codec}-cpu"]


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32", "float64"])
@pytest.mark.parametrize("shards", [None, (256, 64)])
def test_hdf5_style_shuffle_and_zlib_on_the_gpu_read_back_exactly(tmp_path, dtype, shards):
    """What hdmf-zarr makes of HDF5's shuffle + gzip filters, shuffled and framed on the device."""
    data = realistic((1003, 97), "float64", seed=9).astype(dtype)
    store = zarr.storage.LocalStore(tmp_path / "s.zarr")
    compressors = [Shuffle(elementsize=np.dtype(dtype).itemsize), Zlib(level=4)]
    array = make_array(store, data.shape, data.dtype, (64, 32), shards, compressors=compressors)
    gpu_write([(array, NumpyIterator(data, buffer_shape=(256, 97)))])
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_the_default_gpu_engine_shares_one_queue_and_routes_by_layout(tmp_path):
    """engine="gpu" as users get it (CPU workers on the lanes' queue, datasets routed by frame
    size): 1 MiB zstd chunks go to the CPU workers, 64 KiB inner chunks in shards and 4 MiB
    Blosc-zstd chunks to the lanes; every dataset reads back exactly with zarr, tensorstore
    and zarrs, and the report says where each went and why."""
    from zarr.codecs import BloscCodec

    from independent_readers import assert_read_by_all

    data = realistic((262_144, 64))  # 32 MiB int16
    layouts = {
        "zstd_1MiB": ((8192, 64), None, ZstdCodec(level=3)),
        "zstd_64KiB_in_shards": ((512, 64), (16384, 64), ZstdCodec(level=3)),
        "blosc_zstd_4MiB": ((32768, 64), None, BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")),
    }
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path / "g.zarr"), mode="w")
    pairs = []
    for name, (chunks, shards, codec) in layouts.items():
        array = root.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards, compressors=codec
        )
        pairs.append((array, NumpyIterator(data, buffer_shape=(65536, 64))))
    options = WriteOptions(engine="gpu")
    assert options.gpu_cpu_helpers is None
    report = write_datasets([DatasetWrite(a, i) for a, i in pairs], GpuEngine.create(options), options)
    print(report.summary())
    for name in layouts:
        np.testing.assert_array_equal(zarr.open_array(tmp_path / "g.zarr" / name, mode="r")[...], data)
        assert_read_by_all(tmp_path / "g.zarr", data, name)
    where = {d.name: d for d in report.per_dataset}
    assert "CPU worker" in where["zstd_1MiB"].engine and "not faster" in where["zstd_1MiB"].reason
    for name in ("zstd_64KiB_in_shards", "blosc_zstd_4MiB"):
        assert "lanes" in where[name].engine and "stay on the GPU" in where[name].reason
