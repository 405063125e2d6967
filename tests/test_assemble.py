import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdmf_zarr_parallel.write.assemble import UnitAssembler


def blocks(shape, block):
    origins = np.stack(np.meshgrid(*[range(0, s, b) for s, b in zip(shape, block, strict=True)], indexing="ij"), -1)
    for origin in origins.reshape(-1, len(shape)):
        yield tuple(slice(int(o), min(int(o) + b, s)) for o, b, s in zip(origin, block, shape, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda r: st.tuples(
            st.tuples(*[st.integers(1, 25)] * r),
            st.tuples(*[st.integers(1, 9)] * r),
            st.tuples(*[st.integers(1, 11)] * r),
        )
    ),
    st.booleans(),
)
def test_every_unit_is_released_once_and_whole(case, growing):
    shape, unit, block = case
    data = np.arange(np.prod(shape), dtype="int32").reshape(shape) + 1
    bounds = (None, *shape[1:]) if growing else shape
    asm = UnitAssembler(unit, np.dtype("int32"), 0, bounds)
    released = {}
    for region in blocks(shape, block):
        for coords, unit_data in asm.add(region, data[region]):
            assert coords not in released
            released[coords] = unit_data
    assert asm.final_shape() == shape
    for coords, unit_data in asm.finish():
        assert coords not in released
        released[coords] = unit_data
    grid_shape = tuple(-(-s // u) for s, u in zip(shape, unit, strict=True))
    assert len(released) == int(np.prod(grid_shape))
    for coords, unit_data in released.items():
        assert unit_data.shape == unit
        region = tuple(slice(c * u, min((c + 1) * u, s)) for c, u, s in zip(coords, unit, shape, strict=True))
        local = tuple(slice(0, r.stop - r.start) for r in region)
        np.testing.assert_array_equal(unit_data[local], data[region])
        padding = np.ones(unit, bool)
        padding[local] = False
        assert (unit_data[padding] == 0).all()


def test_units_complete_mid_stream_are_released_before_the_end():
    asm = UnitAssembler((4,), np.dtype("int16"), 0, (12,))
    assert [c for c, _ in asm.add((slice(0, 6),), np.arange(6))] == [(0,)]
    assert asm.staged_count == 1
    assert [c for c, _ in asm.add((slice(6, 12),), np.arange(6))] == [(1,), (2,)]


def test_a_buffer_past_a_fixed_bound_is_rejected():
    asm = UnitAssembler((4,), np.dtype("int16"), 0, (5,))
    with pytest.raises(ValueError, match="past the dataset shape"):
        list(asm.add((slice(0, 6),), np.arange(6)))


def test_overlapping_buffers_complete_a_unit_only_when_every_element_has_arrived():
    asm = UnitAssembler((10,), np.dtype("int16"), 0, (10,))
    assert list(asm.add((slice(0, 6),), np.full(6, 1))) == []
    assert list(asm.add((slice(3, 9),), np.full(6, 2))) == []  # 12 values delivered, only 9 elements covered
    [(coords, unit)] = asm.add((slice(9, 10),), np.full(1, 3))
    assert coords == (0,)
    np.testing.assert_array_equal(unit, [1, 1, 1, 2, 2, 2, 2, 2, 2, 3])  # the later buffer wins, as in stock


@pytest.mark.parametrize("bounds", [(40, 3), (None, 3)])
def test_a_buffer_into_a_unit_already_released_is_refused(bounds):
    asm = UnitAssembler((4, 3), np.dtype("int16"), 0, bounds)
    for start in range(0, 40, 4):
        assert len(list(asm.add((slice(start, start + 4), slice(0, 3)), np.ones((4, 3))))) == 1
    with pytest.raises(ValueError, match=r"writes into chunk \(5, 0\), which earlier buffers already completed"):
        list(asm.add((slice(21, 22), slice(0, 3)), np.ones((1, 3))))


def test_staging_accounts_for_the_mask_of_received_elements():
    assert UnitAssembler((100, 4), np.dtype("int16"), 0, (100, 4)).staging_nbytes == 100 * 4 * 2 + 100 * 4


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 7), st.sampled_from(["next", "gap", "overlap", "columns"])), min_size=1, max_size=30
    ),
    st.integers(1, 10),
    st.integers(8, 200),
)
def test_coalesce_joins_only_continuing_buffers_within_a_row_of_units(steps, unit_rows, max_bytes):
    from hdmf_zarr_parallel.write.source import coalesce

    buffers, row = [], 0
    for rows, how in steps:  # int8 rows of 4 columns: 4 bytes per row
        start = row + (3 if how == "gap" else -1 if how == "overlap" and row else 0)
        cols = slice(0, 2) if how == "columns" else slice(0, 4)
        data = np.arange(start, start + rows).astype("int8").repeat(cols.stop).reshape(rows, cols.stop)
        buffers.append(((slice(start, start + rows), cols), data))
        row = start + rows
    out = list(coalesce(iter(buffers), unit_rows, max_bytes))
    # every input element comes out, in order, exactly once
    assert out[0][0][0].start == buffers[0][0][0].start
    np.testing.assert_array_equal(
        np.concatenate([d.ravel() for _, d in out]), np.concatenate([d.ravel() for _, d in buffers])
    )
    for region, data in out:
        assert data.shape == tuple(r.stop - r.start for r in region)
    joined = [(r, d) for r, d in out if not any(r == b for b, _ in buffers)]
    for region, data in joined:
        assert data.nbytes <= max_bytes
        assert region[0].start // unit_rows == (region[0].stop - 1) // unit_rows  # within one row of units
    assert len(out) <= len(buffers)


def test_one_row_buffers_are_staged_in_blocks():
    from hdmf_zarr_parallel.write.source import coalesce

    rows = [((slice(i, i + 1), slice(0, 8)), np.full((1, 8), i, dtype="int16")) for i in range(100)]
    out = list(coalesce(iter(rows), 40, 1 << 20))
    assert [(r[0].start, r[0].stop) for r, _ in out] == [(0, 40), (40, 80), (80, 100)]
