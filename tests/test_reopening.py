"""Iterators over files pickle as their path: stock hdmf-zarr's own check accepts them, and a copy reads the same data."""

import pickle

import numpy as np
import pytest
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue

from conftest import realistic
from hdmf_zarr_parallel.tools.examples import NpyMemmapIterator
from hdmf_zarr_parallel.tools.h5direct import H5DatasetIterator

DATA = realistic((3000, 24))


def npy_iterator(tmp_path):
    np.save(tmp_path / "x.npy", DATA)
    return NpyMemmapIterator(str(tmp_path / "x.npy"), chunk_shape=(500, 8), buffer_shape=(1000, 24))


def h5_iterator(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=DATA)
    return H5DatasetIterator(str(tmp_path / "x.h5"), "x", chunk_shape=(500, 8), buffer_shape=(1000, 24))


@pytest.mark.parametrize("make", [npy_iterator, h5_iterator], ids=["npy", "hdf5"])
def test_pickles_by_path_and_stock_hdmf_zarr_agrees(tmp_path, make):
    iterator = make(tmp_path)
    # stock hdmf-zarr's number_of_jobs path calls _from_dict(dictionary=...) before it uses processes
    assert ZarrIODataChunkIteratorQueue._is_pickleable(iterator) == (True, None)
    blob = pickle.dumps(iterator)
    assert len(blob) < 1000  # the path and the shapes, never the data
    copy = pickle.loads(blob)
    assert type(copy) is type(iterator) and copy.buffer_shape == (1000, 24) and copy.chunk_shape == (500, 8)
    region = (slice(1000, 2000), slice(0, 24))
    np.testing.assert_array_equal(copy._get_data(region), DATA[region])
    assert iterator.__getstate__() == iterator._to_dict()
    for it in (iterator, copy):
        getattr(it, "close", lambda: None)()
