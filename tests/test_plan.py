import math
from collections import Counter

import numpy as np
import zarr
from hypothesis import given
from hypothesis import strategies as st

from conftest import NumpyIterator, make_array
from hdmf_zarr_parallel.engines.base import MAX_TILE_BYTES, tile_bytes_for
from hdmf_zarr_parallel.engines.threads import ThreadEngine
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.dispatch import plan_tiles
from hdmf_zarr_parallel.write.plan import UnitGrid, choose_tile_units, region_size


def shapes_and_units(max_rank=3):
    return st.integers(1, max_rank).flatmap(
        lambda rank: st.tuples(
            st.tuples(*[st.integers(1, 40)] * rank),
            st.tuples(*[st.integers(1, 12)] * rank),
            st.tuples(*[st.integers(1, 30)] * rank),
        )
    )


def test_unit_regions_are_clipped_at_the_edges():
    grid = UnitGrid((10, 7), (4, 3))
    assert grid.grid_shape == (3, 3)
    assert grid.unit_region((2, 2)) == (slice(8, 10), slice(6, 7))
    assert list(grid.units_overlapping((slice(3, 5), slice(0, 3)))) == [(0, 0), (1, 0)]


@given(shapes_and_units(), st.integers(1, 10_000))
def test_tiles_cover_every_unit_exactly_once(case, target_bytes):
    shape, unit, buffer = case
    grid = UnitGrid(shape, unit)
    tile_units = choose_tile_units(grid, buffer, itemsize=2, target_bytes=target_bytes)
    owners = Counter(c for tile in grid.tiles(tile_units) for c in grid.units_overlapping(tile))
    assert set(owners) == set(grid.all_units())
    assert set(owners.values()) == {1}
    tiles = list(grid.tiles(tile_units))
    assert sum(region_size(t) for t in tiles) == math.prod(shape)
    for tile in tiles:  # unit aligned: every tile starts on a unit boundary
        assert all(r.start % u == 0 for r, u in zip(tile, unit, strict=True))


def test_tiles_follow_the_buffer_then_shrink_to_the_byte_target():
    grid = UnitGrid((1000, 384), (100, 64))
    assert choose_tile_units(grid, (400, 384), itemsize=2, target_bytes=1 << 30) == (4, 6)
    small = choose_tile_units(grid, (400, 384), itemsize=2, target_bytes=2 * 100 * 64 * 6)
    assert math.prod(small) * 100 * 64 * 2 <= 2 * 100 * 64 * 6
    assert choose_tile_units(grid, (400, 384), itemsize=2, target_bytes=1) == (1, 1)


def test_tile_bytes_for_is_capped_by_memory_by_the_cap_and_by_the_dataset():
    assert tile_bytes_for(1 << 30, 4, dataset_nbytes=10 << 30) == MAX_TILE_BYTES
    assert tile_bytes_for(64 << 20, 4, dataset_nbytes=10 << 30) == 8 << 20  # the memory bound, twice over
    assert tile_bytes_for(1 << 30, 4, dataset_nbytes=16 << 20) == 2 << 20  # two tasks per worker
    assert tile_bytes_for(1 << 30, 4, dataset_nbytes=5) == 1


def test_a_small_dataset_still_makes_two_tasks_per_worker():
    """One iterator buffer holding the whole dataset must not become one task for one worker."""
    data = np.zeros((1024, 64), "int16")  # 16 chunks of 8 KiB
    array = make_array(zarr.storage.MemoryStore(), data.shape, data.dtype, (64, 64))
    writer = DatasetWrite(array, NumpyIterator(data, buffer_shape=(1024, 64)))
    options = WriteOptions(engine="threads", max_workers=4)
    tiles = list(plan_tiles(ThreadEngine(4).admit(writer), options))
    assert len(tiles) == 8
    assert sorted(r[0].start for r in tiles) == list(range(0, 1024, 128))
