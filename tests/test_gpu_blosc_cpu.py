"""Blosc chunks built by the GPU data path, run on the host lane (no GPU needed).

``HostLane`` runs the device path's steps with numpy, and compresses each Blosc stream with
numcodecs' Zstd / LZ4 where the device uses nvCOMP: the block layout, the per-block byte
shuffle and bitshuffle, the raw-stream and memcpyed fallbacks, the header and the block
offsets are the code the device runs. Our block size is not c-blosc's, so the chunks are
not byte-identical to zarr's own; they must decode exactly, with numcodecs' c-blosc, with
tensorstore and with zarrs.

Also here (issue 15 item 3): zstd and gzip chunks are one frame, one member, whatever the
chunk size, and tensorstore and zarrs read them.
"""

from __future__ import annotations

import shutil
import struct
import warnings

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from conftest import BlockIterator, NumpyIterator, make_array, realistic
from hdmf_zarr_parallel.gpu import algorithms
from hdmf_zarr_parallel.gpu import blosc_frame as bf
from hdmf_zarr_parallel.gpu.engine import GpuEngine
from hdmf_zarr_parallel.gpu.lanes import HostLane
from hdmf_zarr_parallel.gpu.plan import GpuCodecPlan, Unsupported, classify
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets
from independent_readers import assert_read_by_all, gzip_members, read_tensorstore, read_zarrs, zstd_frames

DTYPES = ["u1", "i2", "u2", "i4", "f4", "f8"]
SHUFFLES = ["noshuffle", "shuffle", "bitshuffle"]
CNAMES = ["zstd", "lz4", "lz4hc"]


@pytest.fixture
def small_streams(monkeypatch):
    """Streams of 1 KiB instead of 128 KiB, so small test chunks hold many blocks and a leftover."""
    monkeypatch.setattr(bf, "STREAM_NBYTES", 1024)
    bf.layout.cache_clear()
    yield
    bf.layout.cache_clear()


def _array(shape, chunks, dtype, compressor, shards=None, store=None) -> zarr.Array:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(
            store or MemoryStore(), shape=shape, chunks=chunks, shards=shards, dtype=dtype, compressors=compressor
        )


def _data(kind: str, n: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return np.zeros(n, dtype)
    if kind == "random":  # uniform random bytes: nothing compresses, streams and chunks are stored raw
        return rng.integers(0, 256, size=n * np.dtype(dtype).itemsize, dtype="u1").view(dtype)
    if kind == "mixed":  # compressible first half, random second half: some streams raw, the chunk not
        out = realistic((n,), dtype, seed)
        out[n // 2 :] = _data("random", n - n // 2, dtype, seed)
        return out
    return realistic((n,), dtype, seed)


def _parse(chunk: bytes) -> dict:
    """The header fields and the per-stream sizes of a c-blosc 1 chunk (blosc_d's reading rules)."""
    version, versionlz, flags, typesize, nbytes, blocksize, cbytes = struct.unpack_from("<BBBBiii", chunk)
    info = dict(version=version, versionlz=versionlz, flags=flags, typesize=typesize, nbytes=nbytes)
    info.update(blocksize=blocksize, cbytes=cbytes, streams=[])
    if flags & bf.MEMCPYED:
        return info
    nblocks = -(-nbytes // blocksize)
    starts = struct.unpack_from(f"<{nblocks}i", chunk, 16)
    for b, at in enumerate(starts):
        leftover = b == nblocks - 1 and nbytes % blocksize
        size = nbytes % blocksize if leftover else blocksize
        split = not flags & bf.DONT_SPLIT and typesize <= 16 and blocksize // typesize >= 128 and not leftover
        per = typesize if split else 1
        for _ in range(per):
            (n,) = struct.unpack_from("<i", chunk, at)
            info["streams"].append((size // per, n))
            at += 4 + n
    return info


def _encode(array, rows: np.ndarray) -> list[bytes]:
    plan = classify(array)
    assert isinstance(plan, GpuCodecPlan), plan
    return [bytes(c) for c in HostLane().encode(plan, rows, range(len(rows)))]


# --------------------------------------------------------------------------- the shuffles are c-blosc's
def _cblosc_shuffled(chunk: bytes) -> bytes:
    """What c-blosc compressed in a zstd chunk it wrote (every stream decompressed, or as stored)."""
    info = _parse(chunk)
    out, at = [], 16 + 4 * -(-info["nbytes"] // info["blocksize"])
    for size, n in info["streams"]:
        body = chunk[at + 4 : at + 4 + n]
        out.append(body if n == size else bytes(numcodecs.Zstd().decode(body)))
        at += 4 + n
    return b"".join(out)


@pytest.mark.parametrize("typesize", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("shuffle", [numcodecs.Blosc.SHUFFLE, numcodecs.Blosc.BITSHUFFLE])
@pytest.mark.parametrize("extra", [0, 5, 8 * 3 + 1])
def test_block_shuffles_are_byte_identical_to_c_blosc(typesize, shuffle, extra):
    """c-blosc's zstd streams, decompressed, are what our per-block shuffle makes of the same blocks:
    whole blocks, the leftover block, bytes past the last whole element, bitshuffle's copy of blocks
    whose element count is not a multiple of 8."""
    n = 3000 * typesize + extra
    data = (np.arange(n) // 5 % 256).astype("u1")  # compressible however it is shuffled
    noise = np.random.default_rng(typesize).integers(0, n, size=n // 100)
    data[noise] = np.random.default_rng(extra).integers(0, 256, size=noise.size)
    for blocksize in (0, 1024, 1000 + typesize):
        codec = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=shuffle, typesize=typesize, blocksize=blocksize)
        chunk = bytes(codec.encode(data))
        info = _parse(chunk)
        assert not info["flags"] & bf.MEMCPYED
        lay = bf.BloscLayout(  # c-blosc's blocksize, our shuffle
            nbytes=n, typesize=typesize, shuffle=shuffle, blocksize=info["blocksize"],
            nblocks=-(-n // info["blocksize"]), leftover=n % info["blocksize"], split=False, flags=0,
            offsets=np.zeros(0), sizes=np.zeros(0), first_stream=np.zeros(0),
        )  # fmt: skip
        ours = bf.shuffle_blocks(np, data[None, :].copy(), lay)[0].tobytes()
        assert ours == _cblosc_shuffled(chunk), f"blocksize {info['blocksize']}"


# --------------------------------------------------------------------------- layout rules
@pytest.mark.parametrize("cname", ["zstd", "lz4"])
@pytest.mark.parametrize("typesize", [1, 2, 3, 4, 8, 16, 17, 255])
@pytest.mark.parametrize("nbytes", [128, 1000, 4096, 131072, 131073, 1 << 20, 3 * (1 << 20) + 7, 10_000_000])
def test_layout_follows_c_blosc_rules_and_suits_nvcomp(cname, typesize, nbytes):
    lay = bf.layout(bf.BloscParams(cname, 5, bf.SHUFFLE, typesize), nbytes)
    # the streams tile the chunk, in order, each on a 16-byte boundary
    assert lay.offsets[0] == 0 and lay.offsets[-1] + lay.sizes[-1] == nbytes
    assert (lay.offsets[1:] == lay.offsets[:-1] + lay.sizes[:-1]).all()
    assert (lay.offsets % bf.ALIGN == 0).all()
    assert lay.sizes.max() <= bf.STREAM_NBYTES or lay.nblocks == 1 and nbytes < bf.ALIGN * typesize
    assert lay.leftover < lay.nblocks * bf.ALIGN * typesize  # the one stream never split stays small
    assert lay.nblocks == -(-nbytes // lay.blocksize) and lay.leftover == nbytes % lay.blocksize
    if lay.nblocks > 1:  # c-blosc: a blocksize is a whole number of elements
        assert lay.blocksize % typesize == 0 and lay.blocksize <= bf.STREAM_NBYTES * bf.MAX_SPLITS
    # split exactly when the decoder splits: never zstd (as c-blosc), never the leftover block
    decoder_splits = not lay.flags & bf.DONT_SPLIT and typesize <= 16 and lay.blocksize // typesize >= 128
    assert lay.split == decoder_splits
    assert not (cname == "zstd" and lay.split)
    per = typesize if lay.split else 1
    assert lay.nstreams == (lay.nblocks - (lay.leftover > 0)) * per + (lay.leftover > 0)
    assert (lay.first_stream == np.arange(lay.nblocks) * per).all()
    if cname == "lz4" and 1 < typesize <= 16 and nbytes >= (1 << 20):
        assert lay.split  # large LZ4 chunks split as c-blosc splits them
    assert lay.flags >> 5 == bf.FORMATS[cname] and not lay.flags & 0x08


# --------------------------------------------------------------------------- chunks decode exactly
@pytest.mark.parametrize("cname", CNAMES)
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_chunks_decode_exactly_with_numcodecs(small_streams, cname, shuffle, dtype):
    itemsize = np.dtype(dtype).itemsize
    for elements in (7000, 3333, 200 // itemsize, 1000 // itemsize):  # many blocks + leftover; one block
        array = _array((elements,), (elements,), dtype, BloscCodec(cname=cname, clevel=5, shuffle=shuffle))
        kinds = ["walk", "random", "zeros", "mixed"]
        rows = np.stack([_data(k, elements, dtype, seed=i) for i, k in enumerate(kinds)])
        for kind, row, chunk in zip(kinds, rows, _encode(array, rows), strict=True):
            assert bytes(numcodecs.Blosc().decode(chunk)) == row.tobytes(), (kind, elements)
            info = _parse(chunk)
            assert (info["version"], info["versionlz"], info["typesize"]) == (2, 1, itemsize)
            assert info["nbytes"] == row.nbytes and info["cbytes"] == len(chunk) <= row.nbytes + 16
            assert info["flags"] >> 5 == bf.FORMATS[cname]
            assert bool(info["flags"] & bf.DOSHUFFLE) == (shuffle == "shuffle")
            assert bool(info["flags"] & bf.DOBITSHUFFLE) == (shuffle == "bitshuffle")
            if kind == "random":
                assert info["flags"] & bf.MEMCPYED and len(chunk) == row.nbytes + 16
            if kind == "zeros":
                assert len(chunk) < 64 + row.nbytes // 8
            if kind == "mixed" and elements == 7000 and not info["flags"] & bf.MEMCPYED:
                assert any(n == size for size, n in info["streams"]), "incompressible streams are stored raw"
                assert any(n < size for size, n in info["streams"])


@pytest.mark.parametrize("shuffle", [-1, 0, 1, 2])
@pytest.mark.parametrize("typesize", [None, 2, 3, 4, 300])
def test_numcodecs_blosc_typesizes_and_auto_shuffle(small_streams, shuffle, typesize):
    """``numcodecs.blosc`` sees zarr's chunks as bytes: typesize 1 unless configured (then also one that
    does not divide the chunk, or above 255, which c-blosc treats as 1); AUTOSHUFFLE resolved as numcodecs does."""
    config = {"cname": "zstd", "clevel": 3, "shuffle": shuffle} | ({"typesize": typesize} if typesize else {})
    array = _array((2501,), (2501,), "i2", zarr.codecs.numcodecs.Blosc(**config))
    rows = np.stack([_data(k, 2501, "i2", seed=3) for k in ("walk", "mixed")])
    cpu = bytes(numcodecs.Blosc(**config).encode(rows[0].tobytes()))  # what zarr's own encoding says
    for row, chunk in zip(rows, _encode(array, rows), strict=True):
        assert bytes(numcodecs.Blosc().decode(chunk)) == row.tobytes()
        assert chunk[3] == cpu[3] and chunk[2] & 0x07 & ~bf.MEMCPYED == cpu[2] & 0x07 & ~bf.MEMCPYED


def test_default_streams_of_a_large_chunk(tmp_path):
    """With the real stream size: a 2.4 MB float64 chunk is 19 zstd blocks of almost 128 KiB and a small
    leftover, or 3 LZ4 blocks of 800 kB split in 8 streams each, read by the three readers."""
    data = realistic((300_000,), "float64")
    for cname, blocks in (("zstd", 20), ("lz4", 3)):
        store = LocalStore(tmp_path / cname)
        array = _array(data.shape, data.shape, "f8", BloscCodec(cname=cname, shuffle="shuffle"), store=store)
        (chunk,) = _encode(array, data[None, :])
        info = _parse(chunk)
        assert -(-info["nbytes"] // info["blocksize"]) == blocks
        assert bf.STREAM_NBYTES // 2 < max(size for size, _ in info["streams"]) <= bf.STREAM_NBYTES
        assert len(chunk) < 0.9 * data.nbytes
        (tmp_path / cname / "c").mkdir()
        (tmp_path / cname / "c" / "0").write_bytes(chunk)
        assert_read_by_all(tmp_path / cname, data)


def _without_content_size(frame) -> bytes:
    """The same zstd frame with a 128 KiB window descriptor instead of its content size field."""
    frame = bytes(frame)
    fhd = frame[4]
    fcs_flag, single, checksum = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1
    assert fhd & 3 == 0, "no dictionary id"
    at = 5 + (0 if single else 1)
    at += (1 if single else 0, 2, 4, 8)[fcs_flag]
    return frame[:4] + bytes([checksum << 2, (17 - 10) << 3]) + frame[at:]


def test_zstd_blocks_without_content_size_are_read_by_every_c_blosc(tmp_path, monkeypatch):
    """nvCOMP's zstd frames need not carry the content size; c-blosc's ZSTD_decompress does not need it."""
    inner = algorithms.ALGORITHMS["zstd"]
    monkeypatch.setattr(algorithms.BloscZstd, "raw", lambda self, encoded: _without_content_size(inner.raw(encoded)))
    data = realistic((400, 300), "int16", seed=4)
    store = LocalStore(tmp_path / "a.zarr")
    array = make_array(store, data.shape, data.dtype, (400, 300), compressors=BloscCodec(cname="zstd"))
    (chunk,) = _encode(array, data.reshape(1, -1))
    first = 16 + 4 * -(-data.nbytes // _parse(chunk)["blocksize"]) + 4
    assert struct.unpack_from("<I", chunk, first)[0] == 0xFD2FB528, "the first block is a zstd frame"
    assert chunk[first + 4] >> 6 == 0 and not chunk[first + 4] >> 5 & 1, "without its content size"
    (tmp_path / "a.zarr" / "c" / "0").mkdir(parents=True)
    (tmp_path / "a.zarr" / "c" / "0" / "0").write_bytes(chunk)
    assert_read_by_all(tmp_path / "a.zarr", data)


# --------------------------------------------------------------------------- planning
SUPPORTED = [
    ({"compressors": BloscCodec()}, "blosc-zstd", ("zstd", 5, bf.SHUFFLE, 2)),
    ({"compressors": BloscCodec(cname="lz4", clevel=9, shuffle="bitshuffle")}, "blosc-lz4", ("lz4", 9, 2, 2)),
    ({"compressors": BloscCodec(cname="lz4hc", shuffle="noshuffle")}, "blosc-lz4", ("lz4hc", 5, 0, 2)),
    ({"compressors": BloscCodec(), "dtype": "uint8"}, "blosc-zstd", ("zstd", 5, bf.BITSHUFFLE, 1)),  # zarr's default
    ({"compressors": BloscCodec(typesize=4, blocksize=1 << 20)}, "blosc-zstd", ("zstd", 5, 1, 4)),
    ({"compressors": zarr.codecs.numcodecs.Blosc()}, "blosc-lz4", ("lz4", 5, 1, 1)),
    ({"compressors": zarr.codecs.numcodecs.Blosc(cname="zstd", shuffle=-1)}, "blosc-zstd", ("zstd", 5, 2, 1)),
    ({"compressors": zarr.codecs.numcodecs.Blosc(typesize=300)}, "blosc-lz4", ("lz4", 5, 1, 1)),
    ({"compressors": BloscCodec(), "shards": (50, 64)}, "blosc-zstd", ("zstd", 5, 1, 2)),
]


@pytest.mark.parametrize("kw,algorithm,params", SUPPORTED)
def test_classify_blosc(kw, algorithm, params):
    kw = dict(kw)
    plan = classify(_array((100, 64), (10, 16), kw.pop("dtype", "int16"), kw.pop("compressors"), kw.get("shards")))
    assert isinstance(plan, GpuCodecPlan), plan
    assert plan.algorithm == algorithm and plan.params == bf.BloscParams(*params)
    assert plan.level == params[1] and plan.sharded == ("shards" in kw)
    assert hash(plan) is not None  # lanes key their encoders by plan


REFUSED = [
    ({"compressors": BloscCodec(cname="blosclz")}, "BloscLZ has no nvCOMP equivalent"),
    ({"compressors": BloscCodec(cname="zlib")}, "cname 'zlib'"),
    ({"compressors": BloscCodec(cname="snappy")}, "built without snappy"),
    ({"compressors": zarr.codecs.numcodecs.Blosc(cname="blosclz")}, "BloscLZ"),
    ({"compressors": BloscCodec(clevel=0)}, "clevel=0"),
    ({"compressors": BloscCodec(), "chunks": (4, 8)}, "fewer than 128 bytes"),
    ({"compressors": BloscCodec(), "chunks": (5, 10), "shards": (10, 20)}, "fewer than 128 bytes"),
]


@pytest.mark.parametrize("kw,needle", REFUSED)
def test_classify_refuses_blosc_it_cannot_build(kw, needle):
    kw = dict(kw)
    try:
        array = _array((100, 64), kw.pop("chunks", (10, 16)), "int16", kw.pop("compressors"), kw.get("shards"))
    except Exception as exc:
        pytest.skip(f"zarr refuses it: {exc}")
    result = classify(array)
    assert isinstance(result, Unsupported) and needle in result.reason, result


# --------------------------------------------------------------------------- whole writes, three readers
def gpu_write(pairs, batch_bytes=64 << 10):
    options = WriteOptions(engine="gpu", max_workers=2)
    engine = GpuEngine(2, batch_bytes, lanes=2, lane_factory=CountingLane)
    return write_datasets([DatasetWrite(a, i) for a, i in pairs], engine, options)


class CountingLane(HostLane):
    chunks = 0

    def encode(self, plan, rows, indices):
        CountingLane.chunks += len(indices)
        return super().encode(plan, rows, indices)


@pytest.mark.parametrize("cname", ["zstd", "lz4"])
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shards", [None, (96, 40)])
def test_gpu_write_reads_back_with_zarr_zarrs_and_tensorstore(tmp_path, small_streams, cname, shuffle, dtype, shards):
    data = realistic((301, 77), dtype, seed=5)  # partial edge chunks and shards
    data[:48] = 0  # all-fill chunks are skipped; with shards, inner chunks are missing from the index
    data[192:224, :20] = _data("random", 32 * 20, dtype).reshape(32, 20)  # an incompressible chunk: memcpyed
    store = LocalStore(tmp_path / "a.zarr")
    array = make_array(
        store, data.shape, data.dtype, (32, 20), shards, compressors=BloscCodec(cname=cname, shuffle=shuffle)
    )
    before = CountingLane.chunks
    gpu_write([(array, NumpyIterator(data, buffer_shape=(100, 77)))])
    assert CountingLane.chunks > before, "the chunks went through the lanes"
    assert_read_by_all(tmp_path / "a.zarr", data)


def test_gpu_write_of_numcodecs_blosc_decodes_in_every_reader(tmp_path, small_streams):
    """tensorstore and zarrs do not know the name ``numcodecs.blosc``: the chunks, copied under an array
    whose metadata says ``blosc``, are read by their c-blosc just the same."""
    data = realistic((500, 30), "uint16", seed=2)
    config = {"cname": "lz4", "clevel": 7, "shuffle": 2, "typesize": 2}
    written = make_array(
        LocalStore(tmp_path / "nc.zarr"),
        data.shape,
        data.dtype,
        (64, 30),
        compressors=zarr.codecs.numcodecs.Blosc(**config),
    )
    gpu_write([(written, BlockIterator(data, (70, 30)))])
    np.testing.assert_array_equal(zarr.open_array(LocalStore(tmp_path / "nc.zarr"), mode="r")[...], data)
    relabelled = make_array(
        LocalStore(tmp_path / "v3.zarr"), data.shape, data.dtype, (64, 30), compressors=BloscCodec()
    )
    assert relabelled.metadata.codecs[1].shuffle == "shuffle"  # what the metadata says does not matter to c-blosc
    shutil.copytree(tmp_path / "nc.zarr" / "c", tmp_path / "v3.zarr" / "c")
    np.testing.assert_array_equal(read_zarrs(tmp_path / "v3.zarr"), data)
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "v3.zarr"), data)


# --------------------------------------------------------------------------- item 3: one frame, one member
def test_every_algorithm_but_blosc_compresses_a_chunk_as_one_unit():
    """The GPU plans never split a zstd, gzip, lz4 or zlib chunk: nvCOMP gets each chunk whole (one
    RAW frame / member), whatever its size; only Blosc, whose format holds blocks, gives it pieces."""
    for size in (4096, 1 << 20, 16 << 20, 100 << 20):
        for name, algorithm in algorithms.ALGORITHMS.items():
            plan = GpuCodecPlan(name, 1, np.dtype("u1"), (size,), "little", params=bf.BloscParams("zstd", 5, 1, 1))
            offsets, sizes = algorithm.streams(plan)
            if name.startswith("blosc"):
                assert len(sizes) == -(-size // bf.STREAM_NBYTES)
            else:
                assert offsets.tolist() == [0] and sizes.tolist() == [size]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("shards", [None, (512, 256)])
def test_zstd_and_gzip_chunks_are_one_frame_and_read_by_tensorstore_and_zarrs(tmp_path, codec, shards):
    data = realistic((1024, 256), "int16", seed=9)
    data[:200] = 0
    chunks = (256, 256) if shards is None else (128, 128)  # 128 KiB unsharded chunks, 32 KiB inner ones
    store = LocalStore(tmp_path / "a.zarr")
    compressor = ZstdCodec(level=3) if codec == "zstd" else GzipCodec(level=1)
    array = make_array(store, data.shape, data.dtype, chunks, shards, compressors=compressor)
    gpu_write([(array, NumpyIterator(data, buffer_shape=(300, 256)))], batch_bytes=1 << 20)
    count = zstd_frames if codec == "zstd" else gzip_members
    blobs = _stored_chunks(tmp_path / "a.zarr", array, chunks, shards)
    assert blobs and all(count(b) == 1 for b in blobs)
    assert_read_by_all(tmp_path / "a.zarr", data)


def _stored_chunks(root, array, chunks, shards) -> list[bytes]:
    """Every stored chunk (every inner chunk of every shard) of an array in a local store."""
    out = []
    for path in sorted((root / "c").rglob("*")):
        if not path.is_file():
            continue
        blob = path.read_bytes()
        if shards is None:
            out.append(blob)
            continue
        n = int(np.prod([s // c for s, c in zip(shards, chunks, strict=True)]))
        index = np.frombuffer(blob[-(16 * n + 4) : -4], "<u8").reshape(n, 2)
        out += [blob[int(o) : int(o + s)] for o, s in index if o != 2**64 - 1]
    return out


def test_frame_counters_see_several_frames():
    """The counters used above tell one frame from several."""
    one = bytes(numcodecs.Zstd().encode(b"abc" * 1000))
    assert zstd_frames(one) == 1 and zstd_frames(one + one) == 2
    member = bytes(numcodecs.GZip().encode(b"abc" * 1000))
    assert gzip_members(member) == 1 and gzip_members(member * 3) == 3
