"""Direct HDF5 reads (outside h5py's lock) give exactly what h5py gives, for every layout they accept."""

import threading

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import walk
from hdmf_zarr_parallel.tools.h5direct import ContiguousReader, DirectChunkReader, direct_reader, unshuffle

FILTERS = {
    "none": {},
    "gzip": {"compression": "gzip", "compression_opts": 4},
    "shuffle": {"shuffle": True},
    "shuffle+gzip": {"shuffle": True, "compression": "gzip", "compression_opts": 1},
}
DTYPES = ["uint8", "int16", ">i2", "uint16", "<i4", "float32", ">f8", "bool"]


def in_memory_file(name="f.h5"):
    return h5py.File(name, "w", driver="core", backing_store=False)


@st.composite
def regions(draw, shape):
    """Unit-step slices within ``shape``, empty ones included."""
    bounds = []
    for n in shape:
        start = draw(st.integers(0, n))
        bounds.append(slice(start, draw(st.integers(start, n))))
    return tuple(bounds)


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 40)) for _ in range(ndim))
    resizable = draw(st.booleans())  # only a resizable dataset may have chunks larger than its shape
    chunks = tuple(draw(st.integers(1, 16 if resizable else min(n, 16))) for n in shape)
    return {
        "shape": shape,
        "chunks": chunks,
        "dtype": draw(st.sampled_from(DTYPES)),
        "filters": draw(st.sampled_from(sorted(FILTERS))),
        "maxshape": (None,) * ndim if resizable else shape,
        "written_rows": draw(st.integers(0, shape[0])),  # chunks past these rows stay unallocated
        "region": draw(regions(shape)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_reads_exactly_what_h5py_reads(case):
    data = walk(case["shape"], np.dtype(case["dtype"]).newbyteorder("=")).astype(case["dtype"])
    with in_memory_file() as f:
        dset = f.create_dataset(
            "x",
            shape=case["shape"],
            maxshape=case["maxshape"],
            chunks=case["chunks"],
            dtype=case["dtype"],
            fillvalue=1,
            **FILTERS[case["filters"]],
        )
        dset[: case["written_rows"]] = data[: case["written_rows"]]
        reader = direct_reader(dset)
        assert isinstance(reader, DirectChunkReader)
        got = reader.read(reader.bounds(case["region"]))
        expected = dset[case["region"]]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_a_chunk_stored_without_its_filters_is_read_by_its_filter_mask():
    data = walk((64, 8), "int16")
    with in_memory_file() as f:
        dset = f.create_dataset("x", shape=(64, 8), chunks=(32, 8), dtype="int16", shuffle=True, compression="gzip")
        dset[:32] = data[:32]
        # the second chunk skips both filters (mask bits 0 and 1), as HDF5 may store a partial chunk
        dset.id.write_direct_chunk((32, 0), data[32:].tobytes(), filter_mask=0b11)
        reader = direct_reader(dset)
        np.testing.assert_array_equal(reader.read(reader.bounds((slice(None), slice(None)))), dset[...])
        np.testing.assert_array_equal(dset[...], data)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f.create_dataset("contiguous", data=np.arange(10)),
        lambda f: f.create_dataset("lzf", data=np.arange(100), chunks=(10,), compression="lzf"),
        lambda f: f.create_dataset("fletcher", data=np.arange(100), chunks=(10,), fletcher32=True),
        lambda f: f.create_dataset("text", data=np.array([b"ab", b"cd"]), chunks=(1,)),
        lambda f: f.create_dataset("scalar", data=3),
    ],
    ids=["contiguous", "lzf", "fletcher32", "bytes", "scalar"],
)
def test_other_layouts_and_filters_are_left_to_h5py(make):
    with in_memory_file() as f:  # an in-memory file has nothing to map either
        assert direct_reader(make(f)) is None


def test_selections_other_than_unit_step_slices_are_left_to_h5py():
    with in_memory_file() as f:
        reader = direct_reader(f.create_dataset("x", data=np.arange(100), chunks=(10,)))
        assert reader.bounds((slice(0, 10, 2),)) is None
        assert reader.bounds((3,)) is None
        assert reader.bounds((slice(0, 10), slice(None))) is None  # more axes than the dataset has
        assert reader.bounds(slice(5, 500)) == ((5, 100),)


def test_many_threads_at_once_read_the_same_as_one():
    data = walk((4000, 24), "int16", seed=3)
    with in_memory_file() as f:
        dset = f.create_dataset("x", data=data, chunks=(256, 8), shuffle=True, compression="gzip")
        reader = direct_reader(dset)
        results: dict[int, np.ndarray] = {}

        def read(i):
            results[i] = reader.read(reader.bounds((slice(i * 500, i * 500 + 700), slice(None))))

        threads = [threading.Thread(target=read, args=(i,)) for i in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, got in results.items():
        np.testing.assert_array_equal(got, data[i * 500 : i * 500 + 700])
    assert len(results) == 7


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
def test_unshuffle_inverts_the_hdf5_byte_shuffle(itemsize):
    values = np.frombuffer(walk((120,), "int64").tobytes(), dtype=np.uint8)[: 120 * itemsize]
    shuffled = values.reshape(-1, itemsize).T.tobytes()  # byte k of every element together
    np.testing.assert_array_equal(unshuffle(shuffled, itemsize), values)


@st.composite
def contiguous_cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 30)) for _ in range(ndim))
    return {
        "shape": shape,
        "dtype": draw(st.sampled_from(DTYPES)),
        "userblock": draw(st.sampled_from([0, 512])),
        "region": draw(regions(shape)),
    }


@settings(max_examples=60, deadline=None)
@given(contiguous_cases())
def test_a_contiguous_dataset_is_read_from_a_memory_map_exactly(case):
    import tempfile
    from pathlib import Path

    data = walk(case["shape"], np.dtype(case["dtype"]).newbyteorder("=")).astype(case["dtype"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.h5"
        with h5py.File(path, "w", userblock_size=case["userblock"]) as f:
            f.create_dataset("pad", data=np.arange(37, dtype="int8"))  # the data does not start the file
            f.create_dataset("x", data=data)
        with h5py.File(path, "r") as f:
            reader = direct_reader(f["x"])
            assert isinstance(reader, ContiguousReader)
            got = reader.read(reader.bounds(case["region"]))
            expected = f["x"][case["region"]]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_a_contiguous_dataset_never_written_is_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as f:
        assert direct_reader(f.create_dataset("x", shape=(100,), dtype="int16", fillvalue=3)) is None
        external = f.create_dataset("ext", shape=(10,), dtype="int16", external=[(str(tmp_path / "raw.bin"), 0, 20)])
        external[...] = np.arange(10)
        assert direct_reader(external) is None  # its bytes live in another file


def test_gzip_chunks_are_inflated_by_isal_where_installed():
    isal_zlib = pytest.importorskip("isal.isal_zlib")  # a declared dependency: CI always has it
    from hdmf_zarr_parallel.tools import h5direct

    assert h5direct.inflate is isal_zlib.decompress
