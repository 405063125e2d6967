"""zstd frames from numcodecs' own libzstd (``cpu.zstd_frames``) are numcodecs' bytes, and the
shard encoder that uses them writes what zarr writes; without the library it falls back to numcodecs."""

import threading

import numcodecs.zstd as numcodecs_zstd
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import GzipCodec, ZstdCodec

from conftest import walk
from hdmf_zarr_parallel.cpu import shard as cpu_shard
from hdmf_zarr_parallel.cpu import zstd_frames
from hdmf_zarr_parallel.cpu.unit import ZarrUnitEncoder
from test_cpu_shard import both_ways, sharded


@pytest.fixture
def frames():
    made = zstd_frames.zstd_frames(3)
    assert made is not None, "numcodecs' wheels export libzstd: the direct path must be found here"
    return made


def one_frame(compressor, data: np.ndarray) -> bytes:
    out = np.empty(compressor.bound(data.nbytes), np.uint8)
    size = compressor.pack_rows(data.reshape(1, -1), [0], out, 0)[0]
    return bytes(out[:size])


def samples(seed: int, nbytes: int) -> np.ndarray:
    """Ephys-like int16 noise with runs (compressible, not trivially)."""
    rng = np.random.default_rng(seed)
    data = np.repeat(rng.normal(0, 30, nbytes // 8 + 1).astype(np.int16), 4)
    return data.view(np.uint8)[:nbytes]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.sampled_from([-5, 0, 1, 3, 9, 19, 30]),  # 30: capped at libzstd's maximum, as numcodecs does
    checksum=st.booleans(),
    sizes=st.lists(st.integers(0, 300_000), min_size=1, max_size=4),
    seed=st.integers(0, 50),
)
def test_frames_are_numcodecs_bytes_whatever_the_context_did_before(level, checksum, sizes, seed):
    """One reused context, inputs of changing sizes: each frame is what numcodecs' compress makes."""
    compressor = zstd_frames.zstd_frames(level, checksum)
    for i, nbytes in enumerate(sizes):
        data = samples(seed + i, nbytes)
        assert one_frame(compressor, data) == numcodecs_zstd.compress(data, level=level, checksum=checksum)


def test_pack_rows_writes_the_listed_rows_back_to_back_from_start(frames):
    rows = samples(1, 24 * 4096).reshape(24, 4096)
    order = [5, 0, 23, 7, 8]
    out = np.zeros(100 + len(order) * frames.bound(4096), np.uint8)
    sizes = frames.pack_rows(rows, order, out, start=100)
    assert [i for i, s in enumerate(sizes) if s] == sorted(order)
    offset = 100
    for i in order:
        assert bytes(out[offset : offset + sizes[i]]) == numcodecs_zstd.compress(rows[i], level=3)
        offset += sizes[i]
    assert not out[:100].any(), "nothing before start is touched"


def test_pack_rows_refuses_what_is_not_a_matrix_of_rows(frames):
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        frames.pack_rows(np.zeros((4, 8), np.uint8)[:, ::2], [0], np.empty(1000, np.uint8), 0)


def test_a_full_output_buffer_is_a_zstd_error_not_a_silent_overrun(frames):
    rows = samples(2, 4 * 65536).reshape(4, 65536)
    with pytest.raises(RuntimeError, match="Zstd compression error"):
        frames.pack_rows(rows, [0, 1, 2, 3], np.empty(1000, np.uint8), 0)


def test_each_thread_compresses_with_its_own_context(frames):
    """Threads compressing at once each get numcodecs' bytes (a shared context would mix them up)."""
    inputs = [samples(seed, 200_000) for seed in range(4)]
    expected = [numcodecs_zstd.compress(data, level=3) for data in inputs]
    failures: list[int] = []

    def run(k: int) -> None:
        for _ in range(20):
            if one_frame(frames, inputs[k]) != expected[k]:
                failures.append(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_only_a_chain_of_zstd_alone_takes_frames():
    assert zstd_frames.frames_for([ZstdCodec(level=2, checksum=True)]) is not None
    assert zstd_frames.frames_for([GzipCodec()]) is None
    assert zstd_frames.frames_for([ZstdCodec(), ZstdCodec()]) is None
    assert zstd_frames.frames_for([]) is None


@pytest.fixture(params=["frames", "numcodecs"])
def zstd_path(request, monkeypatch):
    """Both ways a zstd chain is encoded: frames, and numcodecs' compress where frames are not found."""
    if request.param == "numcodecs":
        monkeypatch.setattr(cpu_shard, "frames_for", lambda codecs: None)
    return request.param


@pytest.mark.parametrize(("index_location", "index_crc"), [("start", True), ("end", False), ("end", True)])
@pytest.mark.parametrize("edge", [(24, 8), (13, 5)], ids=["full", "edge"])
def test_shards_are_zarrs_bytes_either_way(zstd_path, index_location, index_crc, edge):
    array = sharded((24, 8), (4, 4), (24, 8), "int16", "zstd", index_crc=index_crc, index_location=index_location)
    encoder = ZarrUnitEncoder(array)
    assert (encoder._shards._frames is not None) == (zstd_path == "frames")
    data = walk(edge, "int16", seed=4)
    data[4:8] = 0  # fill-only inner chunks, not stored
    ours, theirs = both_ways(array, data)
    assert ours == theirs


def test_an_all_fill_shard_is_not_stored_either_way(zstd_path):
    array = sharded((8, 8), (4, 4), (8, 8), "float32", "zstd", fill_value=float("nan"))
    assert ZarrUnitEncoder(array).encode(np.full((8, 8), np.nan, np.float32)) is None
