"""The memory bound is a promise: a write keeps within max_inflight_bytes or is refused before any
data moves; sequential iterators never hang on it, whatever their buffers (issue 12)."""

import math
import re
import threading
import time
import tracemalloc

import numpy as np
import pytest
import zarr
from hdmf.data_utils import AbstractDataChunkIterator, DataChunk, DataChunkIterator
from hypothesis import given, settings
from hypothesis import strategies as st

import hdmf_zarr_parallel.engines.threads as threads_engine
from conftest import BlockIterator, NumpyIterator, make_array, pipeline_write, realistic
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.write.budget import ByteBudget
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.feed import staging_claim
from hdmf_zarr_parallel.write.source import COALESCE_BYTES, coalesce

WALL_LIMIT_S = 20


def within_time(fn, limit=WALL_LIMIT_S):
    """Run ``fn`` in a thread; a write that is still running after ``limit`` seconds has hung."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"the write still runs after {limit} s: it hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def staging(unit_shape, itemsize=2):
    """Bytes one staged unit holds: its data and its mask of received elements."""
    return math.prod(unit_shape) * (itemsize + 1)


# -- item 1: sequential iterators whose buffers straddle units -------------------------------------------


def test_buffers_that_straddle_two_chunks_write_within_a_bound_below_two_staged_chunks(store):
    data = realistic((4000, 10))
    array = make_array(store, data.shape, data.dtype, (100, 10))  # one staged chunk: 3000 bytes
    report = within_time(
        lambda: pipeline_write([(array, DataChunkIterator(data, buffer_size=30))], max_inflight_bytes=5000)
    )
    assert report.peak_inflight_bytes <= 5000
    np.testing.assert_array_equal(array[...], data)


def test_a_channel_wise_iterator_stages_one_column_of_chunks(store):
    data = realistic((3000, 128))
    array = make_array(store, data.shape, data.dtype, (100, 64))  # 30 chunks per column of chunks
    column = 30 * staging((100, 64))
    bound = column + column // 10  # far less than the two columns a straddling buffer touches
    iterator = DataChunkIterator(data, buffer_size=50, iter_axis=1)
    report = within_time(lambda: pipeline_write([(array, iterator)], max_inflight_bytes=bound))
    assert report.peak_inflight_bytes <= bound
    np.testing.assert_array_equal(array[...], data)


def test_a_bound_below_the_staged_peak_is_refused_before_data_moves_saying_what_would_work(store):
    data = realistic((3000, 128))
    array = make_array(store, data.shape, data.dtype, (100, 64))
    column = 30 * staging((100, 64))
    with pytest.raises(ValueError, match=f"keep 30 of its chunks.*max_inflight_bytes={column} would work"):
        pipeline_write([(array, DataChunkIterator(data, buffer_size=50, iter_axis=1))], max_inflight_bytes=column - 1)
    assert not (store.root / "c").exists()
    report = pipeline_write([(array, DataChunkIterator(data, buffer_size=50, iter_axis=1))], max_inflight_bytes=column)
    assert report.peak_inflight_bytes <= column
    np.testing.assert_array_equal(array[...], data)


def test_buffers_aligned_with_the_chunks_need_one_staged_chunk(store):
    data = realistic((3000, 128))
    array = make_array(store, data.shape, data.dtype, (100, 64))
    bound = staging((100, 64))
    report = pipeline_write([(array, DataChunkIterator(data, buffer_size=64, iter_axis=1))], max_inflight_bytes=bound)
    assert report.peak_inflight_bytes <= bound
    np.testing.assert_array_equal(array[...], data)


def test_sequential_datasets_that_cannot_stage_together_take_turns(tmp_path):
    datasets = [realistic((3000, 128), seed=i) for i in range(2)]
    arrays = [
        make_array(zarr.storage.LocalStore(tmp_path / f"{i}.zarr"), d.shape, d.dtype, (100, 64))
        for i, d in enumerate(datasets)
    ]
    bound = 30 * staging((100, 64)) * 3 // 2  # each stages one column of chunks: two do not fit at once
    iterators = [DataChunkIterator(d, buffer_size=50, iter_axis=1) for d in datasets]
    report = within_time(lambda: pipeline_write(list(zip(arrays, iterators, strict=True)), max_inflight_bytes=bound))
    assert report.peak_inflight_bytes <= bound
    for array, data in zip(arrays, datasets, strict=True):
        np.testing.assert_array_equal(array[...], data)


def test_an_unpredictable_iterator_that_can_never_get_its_bytes_fails_promptly_naming_the_bound(store):
    data = realistic((400, 40))
    array = make_array(store, data.shape, data.dtype, (100, 10))  # one staged chunk: 3000 bytes
    # blocks of 50 x 20 leave all four chunks of a row staged, half full, before the next row of blocks
    started = time.monotonic()
    with pytest.raises(ChunkWriteError, match=r"'/'.*max_inflight_bytes of at least 12000") as info:
        within_time(lambda: pipeline_write([(array, BlockIterator(data, (50, 20)))], max_inflight_bytes=10_000))
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, ValueError)


def test_unpredictable_datasets_that_block_each_other_fail_promptly_or_write(tmp_path):
    datasets = [realistic((400, 40), seed=i) for i in range(3)]
    stores = [zarr.storage.LocalStore(tmp_path / f"{i}.zarr") for i in range(3)]
    arrays = [make_array(s, d.shape, d.dtype, (100, 10)) for s, d in zip(stores, datasets, strict=True)]
    bound = 15_000  # each alone stages four chunks (12000 bytes); two at once do not fit
    iterators = [BlockIterator(d, (50, 20)) for d in datasets]
    try:
        report = within_time(
            lambda: pipeline_write(list(zip(arrays, iterators, strict=True)), max_inflight_bytes=bound)
        )
    except ChunkWriteError as exc:
        assert "max_inflight_bytes of at least" in str(exc)
    else:
        assert report.peak_inflight_bytes <= bound
        for array, data in zip(arrays, datasets, strict=True):
            np.testing.assert_array_equal(array[...], data)


def test_a_generator_that_skips_rows_fails_promptly_instead_of_hanging(store):
    rows = [None if i % 7 == 3 else np.full(10, i, dtype="int16") for i in range(400)]
    iterator = DataChunkIterator(data=iter(rows), buffer_size=5)  # the skipped rows leave every chunk open
    array = make_array(store, iterator.recommended_data_shape(), "int16", (10, 10))
    with pytest.raises(ChunkWriteError, match="max_inflight_bytes of at least 1200"):
        within_time(lambda: pipeline_write([(array, iterator)], max_inflight_bytes=1000))


# -- item 7: one buffer larger than the bound ----------------------------------------------------------


def test_a_buffer_larger_than_the_bound_is_shared_by_several_tasks_within_it(store, monkeypatch):
    data = realistic((20_000, 64))  # one 2.5 MB buffer
    array = make_array(store, data.shape, data.dtype, (500, 64))  # 64 KB chunks, 96 KB staged
    bound = 1_000_000
    batches = []
    real = threads_engine.ThreadEngine.submit_units

    def recording(self, writer, units):
        batches.append(len(units))
        return real(self, writer, units)

    monkeypatch.setattr(threads_engine.ThreadEngine, "submit_units", recording)
    iterator = DataChunkIterator(data, buffer_size=len(data))
    report = pipeline_write([(array, iterator)], max_inflight_bytes=bound, max_workers=3)
    assert report.peak_inflight_bytes <= bound
    assert len(batches) >= 6 and max(batches) * staging((500, 64)) <= bound // 2
    np.testing.assert_array_equal(array[...], data)


def test_the_budget_never_lets_one_request_past_the_bound():
    budget = ByteBudget(100)
    with pytest.raises(ValueError, match="needs 101 bytes at once, more than max_inflight_bytes=100"):
        budget.acquire(101)
    assert budget.peak == 0


# -- item 10: growing like stock; a buffer far into a huge array --------------------------------------------


class GrowingIterator(AbstractDataChunkIterator):
    """Announces a first shape (recommended_data_shape) below its finite maxshape, as a reader that
    learns its length as it goes does, then delivers every row in blocks."""

    def __init__(self, array: np.ndarray, first_rows: int, block_rows: int) -> None:
        self.array = array
        self.first_rows = first_rows
        self._starts = iter(range(0, len(array), block_rows))
        self.block_rows = block_rows

    def __iter__(self):
        return self

    def __next__(self) -> DataChunk:
        start = next(self._starts)
        selection = (slice(start, min(start + self.block_rows, len(self.array))), slice(None))
        return DataChunk(data=self.array[selection], selection=selection)

    def recommended_chunk_shape(self):
        return (64, self.array.shape[1])

    def recommended_data_shape(self):
        return (self.first_rows, self.array.shape[1])

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def maxshape(self):
        return self.array.shape


def test_a_dataset_created_smaller_than_its_maxshape_grows_as_stock_grows_it(tmp_path):
    from hdmf_zarr.nwb import NWBZarrIO
    from pynwb import TimeSeries
    from pynwb.testing.mock.file import mock_NWBFile

    from hdmf_zarr_parallel import NWBParallelZarrIO

    data = realistic((1000, 6))
    results = {}
    for name, io_class, kwargs in [("stock", NWBZarrIO, {}), ("ours", NWBParallelZarrIO, {"engine": "threads"})]:
        nwbfile = mock_NWBFile()
        nwbfile.add_acquisition(TimeSeries(name="x", data=GrowingIterator(data, 100, 150), unit="V", rate=1.0))
        path = tmp_path / f"{name}.nwb.zarr"
        with io_class(str(path), mode="w", **kwargs) as io:
            io.write(nwbfile)
        results[name] = zarr.open_array(str(path / "acquisition" / "x" / "data"), mode="r")[...]
    assert results["stock"].shape == data.shape
    np.testing.assert_array_equal(results["ours"], results["stock"])


class CornerIterator(AbstractDataChunkIterator):
    """One buffer in the far corner of a huge, otherwise empty array."""

    def __init__(self, shape, block) -> None:
        self.shape = shape
        self.selection = tuple(slice(s - b, s) for s, b in zip(shape, block, strict=True))
        self.block = np.arange(math.prod(block), dtype="int8").reshape(block)
        self._done = False

    def __iter__(self):
        return self

    def __next__(self) -> DataChunk:
        if self._done:
            raise StopIteration
        self._done = True
        return DataChunk(data=self.block, selection=self.selection)

    def recommended_chunk_shape(self):
        return None

    def recommended_data_shape(self):
        return self.shape

    @property
    def dtype(self):
        return np.dtype("int8")

    @property
    def maxshape(self):
        return self.shape


def test_a_buffer_in_the_far_corner_of_a_huge_array_costs_no_memory_for_the_rest(store, tmp_path):
    shape = (10**6, 10**6)
    array = make_array(store, shape, "int8", (10, 10))
    iterator = CornerIterator(shape, (10, 10))
    tracemalloc.start()
    try:
        pipeline_write([(array, iterator)], max_inflight_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"peak traced allocation {peak} bytes for one 100-byte buffer"
    np.testing.assert_array_equal(array[-10:, -10:], iterator.block)
    chunks = [p for p in (tmp_path / "data.zarr" / "c").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "data.zarr").as_posix() for p in chunks] == ["c/99999/99999"]


# -- the budget itself ---------------------------------------------------------------------------------


def test_a_stager_that_only_more_input_could_free_is_told_at_once():
    budget = ByteBudget(100)
    stager = budget.join("x")
    budget.acquire(80, stager)
    with pytest.raises(ValueError, match=r"'x' \(80 bytes\).*at least 110"):
        budget.acquire(30, stager)


def test_a_stager_waits_while_task_bytes_will_come_back():
    budget = ByteBudget(100)
    stager = budget.join("x")
    budget.acquire(80)  # a task's
    threading.Timer(0.2, budget.release, (80,)).start()
    budget.acquire(30, stager)
    assert budget.used == 30 and budget.peak == 80


def test_a_request_that_fits_once_a_task_ends_is_not_mistaken_for_being_stuck():
    budget = ByteBudget(100)
    stager = budget.join("x")
    budget.acquire(50, stager)
    budget.acquire(40)  # a task's
    errors, staged = [], threading.Event()
    threading.Thread(target=lambda: (budget.acquire(30, stager), staged.set()), daemon=True).start()

    def region_task():
        try:
            budget.acquire(60)  # fits only once the stager's bytes are a task's and that task ends
        except BaseException as exc:
            errors.append(exc)

    other = threading.Thread(target=region_task, daemon=True)
    other.start()
    time.sleep(0.2)
    budget.release(40)  # both wake: the stager's request fits, the other's does not, yet
    assert staged.wait(5)
    time.sleep(0.3)
    assert errors == [] and other.is_alive()
    budget.hand_over(80, stager)
    budget.release(80)
    other.join(5)
    assert errors == [] and budget.used == 60


def test_stagers_whose_claims_do_not_fit_together_take_turns():
    budget = ByteBudget(100)
    first = budget.join("a", claim=60)
    joined = threading.Event()
    threading.Thread(target=lambda: (budget.join("b", claim=60), joined.set()), daemon=True).start()
    assert not joined.wait(0.3)
    budget.leave(first)
    assert joined.wait(5)


# -- the staged peak predicted for DataChunkIterator ------------------------------------------------------


@settings(max_examples=80)
@given(
    st.integers(1, 3).flatmap(
        lambda r: st.tuples(
            st.tuples(*[st.integers(1, 14)] * r),  # shape
            st.tuples(*[st.integers(1, 6)] * r),  # unit
            st.integers(0, r - 1),  # iter axis
        )
    ),
    st.integers(1, 9),
    st.booleans(),
)
def test_the_predicted_staged_peak_is_what_assembling_the_buffers_stages(case, buffer_size, unknown_length):
    shape, unit, axis = case
    values = np.arange(math.prod(shape), dtype="int16").reshape(shape)
    if unknown_length:
        pieces = iter(list(np.moveaxis(values, axis, 0)))
        iterator = DataChunkIterator(data=pieces, buffer_size=buffer_size, iter_axis=axis)
        array_shape = iterator.recommended_data_shape()
    else:
        iterator = DataChunkIterator(data=values, buffer_size=buffer_size, iter_axis=axis)
        array_shape = shape
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=array_shape, dtype="int16", chunks=unit)
    writer = DatasetWrite(array, iterator)
    predicted = staging_claim(writer) // writer.assembler().staging_nbytes
    assembler = writer.assembler()
    peak = 0
    for region, data in coalesce(writer.source.buffers(), unit[0], COALESCE_BYTES):  # as the feeder stages them
        for coords in assembler.begin(region):
            if assembler.opens(coords, region):
                peak = max(peak, assembler.staged_count + 1)
            assembler.put(coords, region, data)
    if unknown_length:
        assert peak <= predicted  # the worst case: the length may end inside a band of units
    else:
        assert peak == predicted


# -- no shape, buffer or bound hangs ----------------------------------------------------------------------

KINDS = ["rows", "columns", "generator", "generator_columns", "random", "blocks"]


@st.composite
def writes(draw):
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 12)))
    chunks = (draw(st.integers(1, 12)), draw(st.integers(1, 6)))
    shards = None
    if draw(st.booleans()):
        shards = (chunks[0] * draw(st.integers(1, 3)), chunks[1] * draw(st.integers(1, 2)))
    unit = shards or chunks
    units = math.prod(math.ceil(s / u) for s, u in zip(shape, unit, strict=True))
    kind = draw(st.sampled_from(KINDS))
    buffer = draw(st.integers(1, 15))
    block = (draw(st.integers(1, shape[0])), draw(st.integers(1, shape[1])))
    bound = draw(st.integers(max(1, staging(unit) // 2), staging(unit) * (units + 1)))
    engine = draw(st.sampled_from(["threads", "serial"]))
    return shape, chunks, shards, kind, buffer, block, bound, engine


def make_iterator(kind, values, buffer, block):
    if kind == "rows":
        return DataChunkIterator(data=values, buffer_size=buffer)
    if kind == "columns":
        return DataChunkIterator(data=values, buffer_size=buffer, iter_axis=1)
    if kind == "generator":
        return DataChunkIterator(data=iter(list(values)), buffer_size=buffer)
    if kind == "generator_columns":
        return DataChunkIterator(data=iter(list(values.T)), buffer_size=buffer, iter_axis=1)
    if kind == "random":
        return NumpyIterator(values, buffer_shape=block)
    return BlockIterator(values, block)


def write_once(case, bound):
    shape, chunks, shards, kind, buffer, block, _, engine = case
    values = np.arange(math.prod(shape), dtype="int16").reshape(shape) + 1
    iterator = make_iterator(kind, values, buffer, block)
    store = zarr.storage.MemoryStore()
    array = make_array(store, iterator.recommended_data_shape(), "int16", chunks, shards, fill_value=0)
    try:
        report = within_time(
            lambda: pipeline_write([(array, iterator)], engine=engine, max_workers=2, max_inflight_bytes=bound)
        )
    except ChunkWriteError as exc:  # found stuck at run time: only an iterator whose buffers cannot be foreseen
        assert kind == "blocks" and "max_inflight_bytes of at least" in str(exc)
        return None
    except ValueError as exc:  # refused up front, naming a bound that works (the least one needs, where unforeseeable)
        assert zarr.open_array(store, mode="r").nchunks_initialized == 0
        found = re.search(r"max_inflight_bytes=(\d+) would work|it needs at least (\d+)", str(exc))
        assert (found.group(2) is not None) == (kind == "blocks")
        return int(found.group(1) or found.group(2))
    assert report.peak_inflight_bytes <= bound
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], values)
    return 0


@settings(max_examples=60)
@given(writes())
def test_every_write_keeps_its_bound_or_is_refused_before_data_moves(case):
    bound = case[6]
    unit = case[2] or case[1]
    units = math.prod(math.ceil(s / u) for s, u in zip(case[0], unit, strict=True))
    would_work = write_once(case, bound)
    if would_work:
        assert bound < would_work <= staging(unit) * units  # never more than staging everything at once
        retried = write_once(case, would_work)
        assert retried == 0 or (retried is None and case[3] == "blocks")  # the bound it names works
