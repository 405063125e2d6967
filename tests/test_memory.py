"""Bytes in flight stay under max_inflight_bytes for data many times larger than the bound."""

import tracemalloc

import numpy as np
import pytest
from hdmf.data_utils import DataChunkIterator

from conftest import BlockIterator, NumpyIterator, make_array, pipeline_write, realistic
from readers import assert_independent_readers_match

LIMIT = 2 << 20  # 2 MiB for a 24 MiB dataset


class CopyingIterator(NumpyIterator):
    """Returns fresh copies, as a file reader would, so every read allocates."""

    def _get_data(self, selection):
        return np.array(self.array[selection])


@pytest.mark.parametrize("engine", ["threads", "serial"])
@pytest.mark.parametrize("kind", ["random", "DataChunkIterator", "blocks"])
def test_inflight_bytes_stay_under_the_limit(store, subtests, engine, kind):
    data = realistic((96_000, 128))  # 24 MiB of int16
    assert data.nbytes > 10 * LIMIT
    array = make_array(store, data.shape, data.dtype, (2000, 64))  # 256 KiB chunks
    iterator = {
        "random": lambda: CopyingIterator(data, buffer_shape=(8000, 128)),  # 2 MiB buffers
        "DataChunkIterator": lambda: DataChunkIterator(data, buffer_size=1500),
        "blocks": lambda: BlockIterator(data, (700, 128)),
    }[kind]()
    tracemalloc.start()
    try:
        report = pipeline_write([(array, iterator)], engine=engine, max_workers=4, max_inflight_bytes=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < report.peak_inflight_bytes <= LIMIT
    # measured, not self-reported: everything the write allocated at once (reads, staging,
    # padding, compressed bytes, interpreter overhead) stays within a small multiple of the bound
    assert peak < 4 * LIMIT, f"peak traced allocation {peak} bytes for a limit of {LIMIT}"
    np.testing.assert_array_equal(array[...], data)
    if (engine, kind) == ("threads", "blocks"):  # every case stores the same chunks: 24 MiB read twice is enough
        assert_independent_readers_match(store, data, subtests)


def test_a_unit_larger_than_the_limit_is_refused_before_writing(store):
    data = realistic((1000, 100))
    array = make_array(store, data.shape, data.dtype, (1000, 100))
    with pytest.raises(ValueError, match="more than max_inflight_bytes=1000"):
        pipeline_write([(array, NumpyIterator(data, buffer_shape=(100, 100)))], max_inflight_bytes=1000)
    assert not (store.root / "c").exists()


def test_a_sequential_unit_is_budgeted_with_its_mask_of_received_elements(store, subtests):
    data = realistic((4000, 10))  # int16: a (100, 10) chunk is 2000 bytes, 3000 with its mask
    array = make_array(store, data.shape, data.dtype, (100, 10))
    with pytest.raises(ValueError, match="needs 3000 bytes in flight, more than max_inflight_bytes=2500"):
        pipeline_write([(array, DataChunkIterator(data, buffer_size=30))], max_inflight_bytes=2500)
    assert not (store.root / "c").exists()
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(100, 10)))], max_inflight_bytes=2500)  # read whole
    np.testing.assert_array_equal(array[...], data)
    assert_independent_readers_match(store, data, subtests)
