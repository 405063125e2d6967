"""The array-module helpers the GPU lanes run (numpy here, cupy on the device): zlib's
Adler-32 and framing, and numcodecs' byte shuffle, against the reference implementations."""

import zlib

import numcodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdmf_zarr_parallel.gpu import framing
from hdmf_zarr_parallel.gpu.framing import adler32_rows
from hdmf_zarr_parallel.gpu.framing import zlib_frame as frame
from hdmf_zarr_parallel.rows import shuffle_rows


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    width=st.integers(0, 5000),
    step=st.sampled_from([7, 1000, 1 << 23]),
    seed=st.integers(0, 99),
)
def test_adler32_rows_matches_zlib(rows, width, step, seed):
    data = np.random.default_rng(seed).integers(0, 256, size=(rows, width), dtype=np.uint8)
    default, framing._STEP_ELEMENTS = framing._STEP_ELEMENTS, step  # small steps: many blocks
    try:
        assert list(adler32_rows(np, data)) == [zlib.adler32(row.tobytes()) for row in data]
    finally:
        framing._STEP_ELEMENTS = default


def test_adler32_of_a_long_row_of_255s():
    """The worst case for overflow: large weights times the largest byte."""
    data = np.full((2, 3 * (1 << 20) + 11), 255, dtype=np.uint8)
    assert list(adler32_rows(np, data)) == [zlib.adler32(data[0].tobytes())] * 2


def test_a_framed_raw_deflate_stream_is_what_numcodecs_zlib_reads():
    data = np.random.default_rng(1).integers(0, 50, size=100_000, dtype=np.uint8)
    compressor = zlib.compressobj(4, zlib.DEFLATED, -15)
    raw = compressor.compress(data.tobytes()) + compressor.flush()
    framed = frame(raw, adler32_rows(np, data[None, :])[0])
    assert bytes(numcodecs.Zlib().decode(framed)) == data.tobytes()
    with pytest.raises(zlib.error):  # a wrong checksum is caught by the reader
        zlib.decompress(frame(raw, 12345))


@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from([1, 2, 4, 8]), elements=st.integers(1, 300), rows=st.integers(1, 4), seed=st.integers(0, 99)
)
def test_shuffle_rows_matches_numcodecs(size, elements, rows, seed):
    data = np.random.default_rng(seed).integers(0, 256, size=(rows, elements * size), dtype=np.uint8)
    shuffled = shuffle_rows(np, data, size)
    codec = numcodecs.Shuffle(elementsize=size)
    assert [bytes(r) for r in shuffled] == [bytes(codec.encode(row)) for row in data]


def test_shuffle_rows_of_typed_rows_and_partial_elements():
    typed = np.arange(12, dtype="<i2").reshape(2, 6)
    assert bytes(shuffle_rows(np, typed, 2)[0]) == bytes(numcodecs.Shuffle(elementsize=2).encode(typed[0]))
    with pytest.raises(ValueError, match="whole number"):
        shuffle_rows(np, np.zeros((1, 10), np.uint8), 4)
