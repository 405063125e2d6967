"""The independent-reader check itself (``tests/readers.py``): it reads with zarrs and tensorstore,
not with zarr-python; its gap table is true; and it fails when a stored chunk is wrong."""

import gzip
import sys

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.codecs.numcodecs import LZ4, Shuffle, Zlib

from conftest import NumpyIterator, make_array, pipeline_write, realistic
from readers import KNOWN_GAPS, READER_NAMES, assert_independent_readers_match, check_reader, read_with_zarrs


def written(tmp_path, shards=None, name="a.zarr", **codecs):
    data = realistic((64, 12))
    array = make_array(zarr.storage.LocalStore(tmp_path / name), data.shape, data.dtype, (16, 6), shards, **codecs)
    pipeline_write([(array, NumpyIterator(data, buffer_shape=(32, 12)))])
    return tmp_path / name, data


def test_zarrs_reads_strictly_with_its_own_pipeline(tmp_path):
    """An array zarrs cannot decode raises: it never falls back, silently, to zarr-python's pipeline."""
    pytest.importorskip("zarrs")
    from zarrs.pipeline import UnsupportedMetadataError

    path, data = written(tmp_path, compressors=LZ4())
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], data)  # stock reads it
    with pytest.raises(UnsupportedMetadataError):
        read_with_zarrs(path)
    path, data = written(tmp_path, name="b.zarr")
    np.testing.assert_array_equal(read_with_zarrs(path), data)


def test_zarrs_decodes_without_zarr_pythons_codec_pipeline(tmp_path, monkeypatch):
    pytest.importorskip("zarrs")
    from zarr.core.codec_pipeline import BatchedCodecPipeline

    path, data = written(tmp_path, shards=(32, 12))

    def refuse(*args, **kwargs):
        raise AssertionError("zarr-python's codec pipeline was used")

    monkeypatch.setattr(BatchedCodecPipeline, "read", refuse)
    np.testing.assert_array_equal(read_with_zarrs(path), data)
    with pytest.raises(AssertionError, match="zarr-python's codec pipeline was used"):
        zarr.open_array(str(path), mode="r")[...]  # stock zarr-python does go through it


@pytest.mark.parametrize("reader", READER_NAMES)
def test_a_missing_reader_is_a_skip_with_its_reason_unless_required(tmp_path, monkeypatch, reader):
    path, data = written(tmp_path)
    monkeypatch.setitem(sys.modules, reader, None)  # import fails as if not installed
    monkeypatch.delenv("HDMF_ZARR_PARALLEL_REQUIRE_READERS", raising=False)
    assert check_reader(reader, path, data) == (
        f"{reader} is not installed: the independent-reader check needs it (pip install {reader})"
    )
    monkeypatch.setenv("HDMF_ZARR_PARALLEL_REQUIRE_READERS", "1")
    with pytest.raises(AssertionError, match=f"{reader} is not installed"):
        check_reader(reader, path, data)


def test_both_readers_read_what_we_write(tmp_path, subtests):
    path, data = written(tmp_path, shards=(32, 12))
    assert_independent_readers_match(path, data, subtests)


GAP_CHAINS = {
    "numcodecs.lz4": {"compressors": LZ4()},
    "numcodecs.zlib": {"compressors": Zlib()},  # no level in its configuration: zarrs' gap too
    "numcodecs.shuffle": {"compressors": [Shuffle(elementsize=2), ZstdCodec()]},
}


@pytest.mark.parametrize("gap", KNOWN_GAPS, ids=[f"{g.reader}-{g.codec}" for g in KNOWN_GAPS])
def test_every_known_gap_is_a_real_refusal(tmp_path, gap):
    """Stock zarr-python reads the chain; the reader refuses it with the error the table names."""
    pytest.importorskip(gap.reader)
    path, data = written(tmp_path, **GAP_CHAINS[gap.codec])
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], data)
    assert check_reader(gap.reader, path, data) == f"known reader gap: {gap.reason}"


def _flip(path, offset=-1):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


CORRUPTIONS = {
    # a value changed in an uncompressed chunk: it decodes, to the wrong data
    "value": ({"compressors": None}, None, lambda p: _flip(p / "c/1/0", 10)),
    # a compressed chunk cut short: it does not decode
    "truncated-zstd": ({}, None, lambda p: (p / "c/1/0").write_bytes((p / "c/1/0").read_bytes()[:-7])),
    # a checksum that does not match the chunk
    "crc32c": ({"compressors": [ZstdCodec(), Crc32cCodec()]}, None, lambda p: _flip(p / "c/1/0")),
    # a shard index whose crc32c does not match
    "shard-index": ({}, (32, 12), lambda p: _flip(p / "c/0/0")),
    # a value changed in an inner chunk of an uncompressed shard
    "shard-inner-value": ({"compressors": None}, (32, 12), lambda p: _flip(p / "c/1/0", 3)),
}


@pytest.mark.parametrize("reader", READER_NAMES)
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_chunk_fails_the_check(tmp_path, reader, corruption):
    codecs, shards, corrupt = CORRUPTIONS[corruption]
    path, data = written(tmp_path, shards, **codecs)
    assert check_reader(reader, path, data) is None
    corrupt(path)
    with pytest.raises(AssertionError):
        check_reader(reader, path, data)
    with pytest.raises(AssertionError):
        assert_independent_readers_match(path, data)


def _never_written(tmp_path, name, compressor, encode):
    data = np.arange(64, dtype="int16")
    path = tmp_path / f"{name}.zarr"
    array = zarr.create_array(str(path), shape=(64,), chunks=(64,), dtype="int16", compressors=compressor)
    array[...] = data
    raw = data.tobytes()
    (path / "c" / "0").write_bytes(bytes(encode(raw[:40])) + bytes(encode(raw[40:])))
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], data)  # stock reads it
    return path, data


def test_the_layouts_we_must_never_write_fail_the_check(tmp_path):
    """DESIGN.md: a zstd chunk of several frames is refused by tensorstore; a gzip chunk of several
    members by tensorstore and zarrs. The check catches either, where stock zarr-python reads both."""
    path, data = _never_written(tmp_path, "zstd-frames", ZstdCodec(), numcodecs.Zstd().encode)
    with pytest.raises(AssertionError, match="tensorstore cannot read"):
        check_reader("tensorstore", path, data)
    path, data = _never_written(tmp_path, "gzip-members", GzipCodec(), gzip.compress)
    for reader in READER_NAMES:
        with pytest.raises(AssertionError, match=f"{reader} cannot read"):
            check_reader(reader, path, data)


def test_a_wrong_dtype_or_a_negative_zero_fails_the_check():
    from readers import assert_bit_exact

    with pytest.raises(AssertionError, match="dtype"):
        assert_bit_exact(np.zeros(3, "int32"), np.zeros(3, "int16"))
    with pytest.raises(AssertionError, match="bitwise"):
        assert_bit_exact(np.array([0.0, -0.0]), np.array([0.0, 0.0]))
    assert_bit_exact(np.arange(3, dtype=">i2"), np.arange(3, dtype="<i2"))  # byte order is storage, not value


def test_big_endian_bytes_are_read_as_values(tmp_path, subtests):
    path, data = written(tmp_path, serializer=BytesCodec(endian="big"))
    assert_independent_readers_match(path, data, subtests)
