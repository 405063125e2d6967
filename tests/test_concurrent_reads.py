"""An iterator is read by several workers at once only when it says it can be (or the user says so)."""

import io
import pickle
import threading
import time

import numpy as np
import pytest
import zarr
from hdmf.data_utils import GenericDataChunkIterator

from conftest import make_array, pipeline_write, realistic
from hdmf_zarr_parallel import NWBParallelZarrIO
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite

DATA = realistic((4000, 12), seed=5)


class FileHandleIterator(GenericDataChunkIterator):
    """Reads rows through ONE shared file handle (seek, then read), as many format readers do:
    correct only if no two threads interleave. Records how many reads ran at once."""

    def __init__(self, array: np.ndarray, pause: float = 0.002, **kwargs) -> None:
        self.array, self.pause = array, pause
        self._handle = io.BytesIO(array.tobytes())
        self._guard = threading.Lock()
        self.active = self.most_at_once = 0
        super().__init__(buffer_shape=(250, array.shape[1]), chunk_shape=(250, array.shape[1]), **kwargs)

    def _get_data(self, selection):
        rows = selection[0]
        with self._guard:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        try:
            row_bytes = self.array.shape[1] * self.array.itemsize
            self._handle.seek(rows.start * row_bytes)
            time.sleep(self.pause)  # another thread may seek meanwhile: only serial reads are safe
            raw = self._handle.read((rows.stop - rows.start) * row_bytes)
            return np.frombuffer(raw, dtype=self.array.dtype).reshape(-1, self.array.shape[1])[:, selection[1]]
        finally:
            with self._guard:
                self.active -= 1

    def _get_maxshape(self):
        return self.array.shape

    def _get_dtype(self):
        return self.array.dtype


class UndeclaredSafe(FileHandleIterator):
    """Thread-safe (no shared handle), but it does not say so."""

    def _get_data(self, selection):
        with self._guard:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(self.pause)
        with self._guard:
            self.active -= 1
        return self.array[selection]


class DeclaredSafe(UndeclaredSafe):
    concurrent_reads = True


def write(iterator, tmp_path, **options):
    array = make_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), DATA.shape, DATA.dtype, (250, 12))
    pipeline_write([(array, iterator)], max_workers=4, **options)
    return zarr.open_array(zarr.storage.LocalStore(tmp_path / "a.zarr", read_only=True))[...]


def test_an_iterator_that_says_nothing_is_read_one_region_at_a_time(tmp_path):
    iterator = FileHandleIterator(DATA)
    np.testing.assert_array_equal(write(iterator, tmp_path), DATA)
    assert iterator.most_at_once == 1


def test_an_iterator_that_declares_concurrent_reads_is_read_by_several_workers(tmp_path):
    iterator = DeclaredSafe(DATA, pause=0.05)
    np.testing.assert_array_equal(write(iterator, tmp_path), DATA)
    assert iterator.most_at_once > 1


@pytest.mark.parametrize(("cls", "requested", "parallel"), [(UndeclaredSafe, True, True), (DeclaredSafe, False, False)])
def test_the_write_option_overrides_the_iterator(tmp_path, cls, requested, parallel):
    iterator = cls(DATA, pause=0.05)
    with NWBParallelZarrIO(
        str(tmp_path / "f.nwb.zarr"), mode="w", engine="threads", max_workers=4, concurrent_reads=requested
    ) as nwbio:
        from pynwb import TimeSeries
        from pynwb.testing.mock.file import mock_NWBFile

        nwbfile = mock_NWBFile()
        nwbfile.add_acquisition(TimeSeries(name="x", data=iterator, unit="V", rate=1.0))
        nwbio.write(nwbfile)
    assert (iterator.most_at_once > 1) is parallel
    with NWBParallelZarrIO(str(tmp_path / "f.nwb.zarr"), mode="r") as nwbio:
        np.testing.assert_array_equal(nwbio.read().acquisition["x"].data[:], DATA)


def test_a_pickled_writer_keeps_reading_one_region_at_a_time(tmp_path):
    array = make_array(zarr.storage.LocalStore(tmp_path / "p.zarr"), DATA.shape, DATA.dtype, (250, 12))
    from conftest import NumpyIterator

    serial = pickle.loads(pickle.dumps(DatasetWrite(array, NumpyIterator(DATA, buffer_shape=(500, 12)), False)))
    parallel = pickle.loads(pickle.dumps(DatasetWrite(array, NumpyIterator(DATA, buffer_shape=(500, 12)))))
    assert not serial.source.concurrent_reads and serial.source._read_lock is not None
    assert parallel.source.concurrent_reads and parallel.source._read_lock is None


def test_concurrent_reads_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="concurrent_reads"):
        WriteOptions(concurrent_reads="yes")
