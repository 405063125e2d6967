"""A failure in any stage re-raises in the caller, names dataset and chunk, and leaves nothing running."""

import threading
import time

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from conftest import BlockIterator, FailingNumpyIterator, NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.cpu import unit as unit_module


class FailingBlocks(BlockIterator):
    def __init__(self, array, block, fail_after):
        super().__init__(array, block)
        self.remaining = fail_after

    def __next__(self):
        if self.remaining == 0:
            raise OSError("sensor unplugged")
        self.remaining -= 1
        return super().__next__()


class FailingStore(zarr.storage.LocalStore):
    """A real local store that refuses one key, as a full disk would."""

    bad_key = "c/3/0"

    def set_sync(self, key, value):
        if key.endswith(self.bad_key):
            raise OSError("No space left on device")
        super().set_sync(key, value)

    async def set(self, key, value):
        if key.endswith(self.bad_key):
            raise OSError("No space left on device")
        await super().set(key, value)


def writer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hzp-")]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    yield
    deadline = time.monotonic() + 5
    while writer_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_threads() == []


@pytest.mark.parametrize("engine", ["serial", "threads", "processes"])
def test_random_access_iterator_failure(store, engine):
    data = realistic((4000, 8))
    array = make_array(store, data.shape, data.dtype, (100, 8))
    iterator = FailingNumpyIterator(data, fail_at_row=2500, buffer_shape=(500, 8), chunk_shape=(100, 8))
    start = time.monotonic()
    with pytest.raises(ChunkWriteError, match=r"dataset '/'.*reading region \[2500:3000, 0:8\].*disk on fire") as err:
        pipeline_write([(array, iterator)], engine=engine, max_workers=2)
    assert time.monotonic() - start < 30
    assert err.value.dataset == "/"


def test_sequential_iterator_failure(store):
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (64, 4))
    with pytest.raises(ChunkWriteError, match="reading from the iterator.*sensor unplugged"):
        pipeline_write([(array, FailingBlocks(data, (50, 4), fail_after=7))])


@pytest.mark.parametrize("access", ["random", "sequential"])
@pytest.mark.parametrize("codec", ["zstd", "gzip+zstd", "zarr's own path"])
def test_encoder_failure_names_the_chunk(store, monkeypatch, access, codec):
    """A codec that fails on one chunk: the error names that chunk and the stage, whether the
    chunk was encoded in a block of whole units (random access), alone (assembled from a
    sequential iterator), or by zarr's own codec pipeline."""
    data = realistic((1000, 4))
    compressors = {"zstd": ZstdCodec(), "gzip+zstd": (GzipCodec(), ZstdCodec()), "zarr's own path": ZstdCodec()}
    array = make_array(store, data.shape, data.dtype, (100, 4), compressors=compressors[codec])
    bad = data[500:600].tobytes()
    if codec == "zarr's own path":
        monkeypatch.setattr(unit_module.DirectChunkEncoder, "for_array", classmethod(lambda cls, array: None))
        real_encode = ZstdCodec._encode_sync

        def zarr_encode(self, chunk_bytes, chunk_spec):
            if chunk_bytes.to_bytes() == bad:
                raise MemoryError("codec exploded")
            return real_encode(self, chunk_bytes, chunk_spec)

        monkeypatch.setattr(ZstdCodec, "_encode_sync", zarr_encode)
    else:
        real_encoder = unit_module.numcodecs_encoder

        def failing_encoder(zarr_codec):
            stage = real_encoder(zarr_codec)

            def encode(buffer):
                if bytes(memoryview(buffer).cast("B")) == bad:
                    raise MemoryError("codec exploded")
                return stage(buffer)

            return encode

        monkeypatch.setattr(unit_module, "numcodecs_encoder", failing_encoder)
    iterator = (
        NumpyIterator(data, buffer_shape=(300, 4), chunk_shape=(100, 4))
        if access == "random"
        else BlockIterator(data, (300, 4))
    )
    with pytest.raises(ChunkWriteError, match=r"chunk \(5, 0\) while encoding.*codec exploded") as err:
        pipeline_write([(array, iterator)])
    assert err.value.chunk == (5, 0)


@pytest.mark.parametrize("sequential", [False, True])
def test_store_failure_names_the_key(tmp_path, sequential):
    store = FailingStore(tmp_path / "full.zarr")
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    iterator = BlockIterator(data, (30, 4)) if sequential else NumpyIterator(data, buffer_shape=(200, 4))
    with pytest.raises(ChunkWriteError, match=r"chunk \(3, 0\) while storing key 'c/3/0'.*No space left"):
        pipeline_write([(array, iterator)])


def test_failure_in_one_dataset_stops_the_others_promptly(tmp_path):
    store = zarr.storage.LocalStore(tmp_path / "g.zarr")
    root = zarr.open_group(store, mode="w")
    big = realistic((200_000, 8))
    good = root.create_array("good", shape=big.shape, dtype=big.dtype, chunks=(1000, 8))
    bad_data = realistic((1000, 8))
    bad = root.create_array("bad", shape=bad_data.shape, dtype=bad_data.dtype, chunks=(100, 8))
    start = time.monotonic()
    with pytest.raises(ChunkWriteError, match="dataset 'bad'"):
        pipeline_write(
            [
                (good, NumpyIterator(big, buffer_shape=(1000, 8))),
                (bad, FailingNumpyIterator(bad_data, fail_at_row=0, buffer_shape=(100, 8))),
            ],
            max_inflight_bytes=64_000,
        )
    assert time.monotonic() - start < 10
    written = list((tmp_path / "g.zarr" / "good").rglob("c/*/*"))
    assert len(written) < 200  # the healthy dataset was stopped, not written to the end


class ShortLastBuffer(NumpyIterator):
    """Returns one row too few for the region that ends the dataset, as an off-by-one reader would."""

    def _get_data(self, selection):
        data = self.array[selection]
        return data[:-1] if selection[0].stop == self.array.shape[0] else data


class SqueezedColumn(NumpyIterator):
    """A one-column dataset whose reader returns 1-D rows."""

    def _get_data(self, selection):
        return self.array[selection][:, 0]


@pytest.mark.parametrize("engine", ["serial", "threads"])
def test_an_iterator_returning_the_wrong_shape_fails_instead_of_being_padded(store, engine):
    data = realistic((1000, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    with pytest.raises(ChunkWriteError, match=r"returned shape \(99, 4\), expected \(100, 4\)") as info:
        pipeline_write([(array, ShortLastBuffer(data, buffer_shape=(100, 4)))], engine=engine)
    assert "reading region [900:1000, 0:4]" in str(info.value)


def test_a_squeezed_column_is_the_same_values(store):
    data = realistic((1000, 1))
    array = make_array(store, data.shape, data.dtype, (100, 1))
    pipeline_write([(array, SqueezedColumn(data, buffer_shape=(300, 1)))])
    np.testing.assert_array_equal(array[...], data)


def test_a_sequential_buffer_smaller_than_its_selection_fails_clearly(store):
    from hdmf.data_utils import DataChunk

    class Lying(BlockIterator):
        def __next__(self):
            chunk = super().__next__()
            return DataChunk(data=chunk.data[:-1], selection=chunk.selection)  # one row short of its selection

    data = realistic((400, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    with pytest.raises(ChunkWriteError, match=r"returned shape \(99, 4\), expected \(100, 4\)"):
        pipeline_write([(array, Lying(data, (100, 4)))])


class OverlappingBuffers:
    """A sequential iterator whose buffers (rows start:start+size) may overlap."""

    def __init__(self, data, starts, size):
        from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

        class _It(AbstractDataChunkIterator):
            def __init__(it):
                it.starts = list(starts)

            def __iter__(it):
                return it

            def __next__(it):
                if not it.starts:
                    raise StopIteration
                s = it.starts.pop(0)
                return DataChunk(data=data[s : s + size], selection=np.s_[s : s + size, :])

            def recommended_chunk_shape(it):
                return None

            def recommended_data_shape(it):
                return data.shape

            @property
            def dtype(it):
                return data.dtype

            @property
            def maxshape(it):
                return data.shape

        self.iterator = _It()


def test_overlapping_sequential_buffers_within_a_chunk_are_written_exactly(store):
    data = realistic((400, 4))
    array = make_array(store, data.shape, data.dtype, (100, 4))
    pipeline_write([(array, OverlappingBuffers(data, [0, 40, 100, 150, 200, 260, 300, 340], 60).iterator)])
    np.testing.assert_array_equal(array[...], data)


def test_a_sequential_buffer_into_a_stored_chunk_fails_naming_the_dataset(store):
    data = realistic((400, 4))
    array = make_array(
        store,
        data.shape,
        data.dtype,
        (100, 4),
    )
    with pytest.raises(ChunkWriteError, match=r"dataset '.*' .* writes into chunk \(0, 0\), which earlier buffers"):
        pipeline_write([(array, OverlappingBuffers(data, [0, 50, 150], 100).iterator)])
