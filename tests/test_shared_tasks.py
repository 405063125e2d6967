"""How GPU lanes and CPU helpers split queued tasks: lanes take whole tasks oldest first,
helpers shave unit-rows off the newest, up to a block at a time (at least one row), never
the first row. Most tests shave one row at a time (``shave_bytes=0``)."""

from concurrent.futures import CancelledError

import numpy as np
import pytest
import zarr

from conftest import NumpyIterator, make_array
from hdmf_zarr_parallel.gpu.shared_tasks import SharedTask, TaskQueue
from hdmf_zarr_parallel.write.dataset import DatasetWrite


@pytest.fixture
def writer():
    data = np.arange(301 * 24, dtype="int16").reshape(301, 24)
    array = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (16, 8))
    return DatasetWrite(array, NumpyIterator(data, buffer_shape=(64, 24)))


def test_shaving_takes_unit_rows_from_the_end_and_leaves_the_first(writer):
    task = SharedTask(writer, region=(slice(256, 301), slice(0, 24)), shave_bytes=0)
    tails = []
    while task.shave() is not None:
        tails.append(task.region)
    assert tails == [(slice(256, 288), slice(0, 24)), (slice(256, 272), slice(0, 24))]
    assert task.region == (slice(256, 272), slice(0, 24))
    assert task.shave() is None


def test_shaved_rows_are_written_by_the_work_they_return(writer):
    task = SharedTask(writer, region=(slice(0, 64), slice(0, 24)), shave_bytes=0)
    work = task.shave()
    assert task.region == (slice(0, 48), slice(0, 24))
    work()
    back = zarr.open_array(writer.target.array.store, mode="r")[...]
    np.testing.assert_array_equal(back[48:64], writer.source.iterator.array[48:64])
    assert not back[:48].any(), "only the shaved row was written"


def test_units_are_shaved_one_at_a_time_keeping_one(writer):
    units = [((i, 0), np.zeros((16, 8), "int16")) for i in range(3)]
    task = SharedTask(writer, units=list(units), shave_bytes=0)
    assert task.shave() is not None and task.shave() is not None
    assert task.shave() is None and len(task.units) == 1


def test_a_shave_takes_up_to_shave_bytes_of_rows_and_never_the_first(writer):
    row = 16 * 24 * 2  # one unit-row of the fixture's (16, 8) chunks across 24 columns, int16
    task = SharedTask(writer, region=(slice(0, 160), slice(0, 24)), shave_bytes=3 * row + 1)
    work = task.shave()
    assert task.region == (slice(0, 112), slice(0, 24)), "three rows at once"
    work()
    back = zarr.open_array(writer.target.array.store, mode="r")[...]
    np.testing.assert_array_equal(back[112:160], writer.source.iterator.array[112:160])
    assert not back[:112].any()
    tails = []
    while task.shave() is not None:
        tails.append(task.region)
    assert tails == [(slice(0, 64), slice(0, 24)), (slice(0, 16), slice(0, 24))]

    units = [((i, 0), np.zeros((16, 8), "int16")) for i in range(5)]
    task = SharedTask(writer, units=list(units), shave_bytes=2 * 16 * 8 * 2)
    assert task.shave() is not None and [c for c, _ in task.units] == [(0, 0), (1, 0), (2, 0)]
    assert task.shave() is not None and [c for c, _ in task.units] == [(0, 0)]
    assert task.shave() is None


def test_the_future_ends_after_every_part_and_with_the_first_error(writer):
    task = SharedTask(writer, region=(slice(0, 64), slice(0, 24)))
    task.shave()
    task.part_done()
    assert not task.done.done(), "one part is still out"
    task.part_done()
    assert task.done.result() == 64 * 24 * 2

    failed = SharedTask(writer, region=(slice(0, 64), slice(0, 24)))
    failed.shave()
    failed.part_done(OSError("first"))
    failed.part_done(OSError("second"))
    with pytest.raises(OSError, match="first"):
        failed.done.result()


def test_a_task_is_a_region_or_units_not_both(writer):
    with pytest.raises(ValueError):
        SharedTask(writer)
    with pytest.raises(ValueError):
        SharedTask(writer, region=(slice(0, 16), slice(0, 24)), units=[])


def test_queue_order_newest_shaved_first_and_cancel(writer):
    queue = TaskQueue()
    old = SharedTask(writer, region=(slice(0, 64), slice(0, 24)))
    single = SharedTask(writer, region=(slice(64, 80), slice(0, 24)))
    queue.put(old)
    queue.put(single)
    with queue.lock:
        task, _ = queue.shave_newest()
    assert task is old, "a one-row task is left to the lanes"
    assert queue.take_oldest() is old
    queue.cancel_all()
    with pytest.raises(CancelledError):
        single.done.result()
    assert queue.take_oldest() is None
    with queue.lock:
        assert queue.shave_newest() is None
    single.part_done(OSError("late"))  # a part ending after the cancel is ignored
