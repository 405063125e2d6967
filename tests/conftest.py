"""Shared helpers: iterators over in-memory arrays and a direct pipeline write into a real zarr array."""

from __future__ import annotations

import contextlib
import gzip
import math
import types

import numpy as np
import pytest
import zarr
from hdmf.data_utils import AbstractDataChunkIterator, DataChunk, DataChunkIterator, GenericDataChunkIterator
from hypothesis import settings

from hdmf_zarr_parallel.engines import make_engine
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets
from hdmf_zarr_parallel.write.report import WriteReport

# No per-example deadline anywhere: a slow or busy CI machine must not fail a property test
# whose examples write real stores. A test's own @settings still sets its example count.
settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")


class NumpyIterator(GenericDataChunkIterator):
    """A random-access iterator over an in-memory array (picklable, for the processes engine)."""

    concurrent_reads = True

    def __init__(self, array: np.ndarray, **kwargs) -> None:
        self.array = array
        if "buffer_shape" in kwargs:
            kwargs.setdefault("chunk_shape", kwargs["buffer_shape"])
        self._init_kwargs = kwargs
        super().__init__(**kwargs)

    def __reduce__(self):
        return (_rebuild_numpy_iterator, (self.array, self._init_kwargs))

    def _get_data(self, selection):
        return self.array[selection]

    def _get_maxshape(self):
        return self.array.shape

    def _get_dtype(self):
        return self.array.dtype


def _rebuild_numpy_iterator(array, kwargs):
    return NumpyIterator(array, **kwargs)


class FailingNumpyIterator(NumpyIterator):
    """Raises, as a failing disk would, when asked for a region holding ``fail_at_row``."""

    def __init__(self, array, fail_at_row, **kwargs):
        self.fail_at_row = fail_at_row
        super().__init__(array, **kwargs)

    def __reduce__(self):
        return (_rebuild_failing, (self.array, self.fail_at_row, self._init_kwargs))

    def _get_data(self, selection):
        if selection[0].start <= self.fail_at_row < selection[0].stop:
            raise OSError("disk on fire")
        return super()._get_data(selection)


def _rebuild_failing(array, fail_at_row, kwargs):
    return FailingNumpyIterator(array, fail_at_row, **kwargs)


class BlockIterator(AbstractDataChunkIterator):
    """A plain AbstractDataChunkIterator yielding arbitrary (possibly misaligned) blocks in C order."""

    def __init__(self, array: np.ndarray, block: tuple[int, ...]) -> None:
        self.array = array
        self.block = block
        grids = [range(0, s, b) for s, b in zip(array.shape, block, strict=True)]
        self._origins = iter(np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, array.ndim).tolist())

    def __iter__(self):
        return self

    def __next__(self) -> DataChunk:
        origin = next(self._origins)
        sel = tuple(slice(o, min(o + b, s)) for o, b, s in zip(origin, self.block, self.array.shape, strict=True))
        return DataChunk(data=self.array[sel], selection=sel)

    def recommended_chunk_shape(self):
        return None

    def recommended_data_shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def maxshape(self):
        return self.array.shape


def realistic(shape: tuple[int, ...], dtype="int16", seed: int = 0) -> np.ndarray:
    """Compressible noise (a random walk plus jitter), never zeros or uniform random."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 3, size=shape), axis=0) + rng.normal(0, 5, size=shape)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        walk = np.clip(walk + (0 if dt.kind == "i" else info.max // 2), info.min, info.max)
    return walk.astype(dt)


def walk(shape: tuple[int, ...], dtype, seed: int = 0) -> np.ndarray:
    """Like :func:`realistic`, but one integer random walk through the flattened array: cheap
    for the large buffers of the GPU codec tests, and defined for every dtype they cover."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    steps = np.cumsum(rng.integers(-5, 6, size=n)) + rng.integers(-2, 3, size=n)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (np.sin(np.arange(n) * 0.01) * 300 + steps * 0.125).astype(dt).reshape(shape)
    if dt.kind == "b":
        return (steps % 3 == 0).reshape(shape)
    if dt.kind == "u":
        return (np.abs(steps) % (int(np.iinfo(dt).max) + 1)).astype(dt).reshape(shape)
    info = np.iinfo(dt)
    return np.clip(steps, info.min, info.max).astype(dt).reshape(shape)


def make_array(store, data_shape, dtype, chunks, shards=None, **kwargs) -> zarr.Array:
    return zarr.create_array(store, shape=data_shape, dtype=dtype, chunks=chunks, shards=shards, **kwargs)


def pipeline_write(arrays_and_iterators, **option_kwargs) -> WriteReport:
    """Write through the pipeline as the queue would, with the given WriteOptions."""
    options = WriteOptions(**{"engine": "threads", "max_workers": 3, **option_kwargs})
    writers = [DatasetWrite(array, iterator, options.concurrent_reads) for array, iterator in arrays_and_iterators]
    return write_datasets(writers, make_engine(options), options)


@contextlib.contextmanager
def gzip_clock_frozen():
    """Stop the clock gzip writes into each header (whole seconds), so two encodings of the same
    data are byte-identical even when they straddle a second."""
    real = gzip.time
    gzip.time = types.SimpleNamespace(time=lambda: 1_700_000_000.0)
    try:
        yield
    finally:
        gzip.time = real


@pytest.fixture
def store(tmp_path):
    return zarr.storage.LocalStore(tmp_path / "data.zarr")


__all__ = [
    "BlockIterator",
    "DataChunkIterator",
    "FailingNumpyIterator",
    "NumpyIterator",
    "make_array",
    "pipeline_write",
    "realistic",
]
