"""``convert``: NWB HDF5 → NWB Zarr through the engines, the same content as stock export.

Each NWB file is generated here with several neurodata types (an electrodes table, a raw
ElectricalSeries, LFP in a processing module, a TwoPhotonSeries with its imaging plane,
units with ragged spike times and an electrodes column). Stock ``NWBZarrIO.export``
(``link_data=False``) is the reference: the outputs are compared array by array and
attribute by attribute (``compare_zarr_stores``), the output is compared with the HDF5
input by reading both back (``compare_nwb_files``), and PyNWB reads the output. Two independent
Zarr v3 readers, tensorstore and zarrs (``readers.py``), read every numeric array of the output
as the HDF5 input holds it.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import zarr
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import NWBHDF5IO

from hdmf_zarr_parallel.tools.convert import ConvertError, ConvertOptions, convert
from hdmf_zarr_parallel.tools.examples import write_example_hdf5
from hdmf_zarr_parallel.tools.h5direct import H5DatasetIterator
from hdmf_zarr_parallel.tools.verify import compare_nwb_files, compare_zarr_stores
from readers import assert_independent_readers_match

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

SMALL = 1000  # stream every numeric dataset of at least 1000 bytes, so the small file exercises the engines
STREAMED = {
    "/acquisition/ElectricalSeries/data",
    "/acquisition/TwoPhotonSeries/data",
    "/processing/ecephys/LFP/LFP/data",
    "/units/spike_times",
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "session.nwb"
    return write_example_hdf5(path, seconds=1.0, channels=24, frames=40, frame_side=48, units=16)


@pytest.fixture(scope="module")
def stock(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("stock") / "stock.nwb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(source), mode="r") as src_io, NWBZarrIO(str(out), mode="w") as io:
            io.export(src_io=src_io, write_args={"link_data": False})
    return out


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


CHECKED = {*STREAMED, "/general/extracellular_ephys/electrodes/x"}  # streamed, and a copied array with the codec


def assert_readers_match_source(subtests, source, out, names=CHECKED):
    """tensorstore and zarrs read arrays of the output bit-exactly as the HDF5 source holds them:
    ``names``, or with ``names=None`` every numeric array, streamed by our engines or copied by
    hdmf-zarr (strings and references aside)."""
    import h5py

    with h5py.File(source, "r") as f:
        if names is None:
            names = set()

            def numeric(name, obj):  # returns None: visititems goes on
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
                    names.add("/" + name)

            f.visititems(numeric)
            assert STREAMED <= names or "/acquisition/i4/data" in names
        for name in sorted(names):
            assert_independent_readers_match(out / name.lstrip("/"), f[name][()], subtests, name=name)


@pytest.mark.parametrize("engine", ["threads", "serial", "processes"])
def test_default_convert_equals_stock_export(source, stock, tmp_path, subtests, engine):
    out = tmp_path / "ours.nwb.zarr"
    report = convert(source, out, ConvertOptions(engine=engine, workers=2, stream_min_bytes=SMALL))
    assert {name for name, _ in report.streamed} == STREAMED
    assert report.copied > 0 and report.engine.startswith(engine)
    # every group, array (values, dtype, shape, chunks, codecs, fill value) and attribute, references included
    assert compare_zarr_stores(stock, out) == []
    assert compare_nwb_files(source, out) == []
    assert siblings(out) == ["ours.nwb.zarr"]  # no temporary left behind
    assert_readers_match_source(subtests, source, out, names=None if engine == "threads" else CHECKED)


@pytest.fixture(scope="module")
def compressed_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("gz") / "session.nwb"
    return write_example_hdf5(path, compressed=True, seconds=2.0, channels=24, frames=60, frame_side=48, units=16)


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_a_gzip_shuffle_source_converts_as_stock_export_does(
    compressed_source, tmp_path, subtests, engine, monkeypatch
):
    """HDF5 chunks are inflated by the workers (``h5direct``), not inside h5py: same store as stock."""
    import h5py

    from hdmf_zarr_parallel.tools import h5direct

    with h5py.File(compressed_source, "r") as f:
        raw = f["acquisition/ElectricalSeries/data"]
        assert raw.compression == "gzip" and raw.shuffle and raw.id.get_num_chunks() > 1
    stock = tmp_path / "stock.nwb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(compressed_source), mode="r") as src_io, NWBZarrIO(str(stock), mode="w") as io:
            io.export(src_io=src_io, write_args={"link_data": False})
    decoded = []
    real_chunk = h5direct.DirectChunkReader._chunk
    monkeypatch.setattr(h5direct.DirectChunkReader, "_chunk", lambda self, o: decoded.append(o) or real_chunk(self, o))
    out = tmp_path / "ours.nwb.zarr"
    report = convert(compressed_source, out, ConvertOptions(engine=engine, workers=2, stream_min_bytes=SMALL))
    assert {name for name, _ in report.streamed} == STREAMED
    assert compare_zarr_stores(stock, out) == []  # gzip + shuffle mapped to zarr codecs as stock maps them
    assert compare_nwb_files(compressed_source, out) == []
    if engine == "threads":  # worker processes decode in their own memory, out of this test's sight
        assert decoded
    assert set(report.reading.values()) == {"raw HDF5 chunks, decoded by the workers"}
    assert_readers_match_source(  # numcodecs.shuffle + numcodecs.zlib
        subtests, compressed_source, out, names=None if engine == "threads" else CHECKED
    )


def test_a_contiguous_source_is_read_through_a_memory_map(source, stock, tmp_path, subtests, monkeypatch):
    from hdmf_zarr_parallel.tools import h5direct

    reads = []
    real_read = h5direct.ContiguousReader.read
    monkeypatch.setattr(h5direct.ContiguousReader, "read", lambda self, b: reads.append(b) or real_read(self, b))
    out = tmp_path / "ours.nwb.zarr"
    report = convert(source, out, ConvertOptions(engine="threads", workers=2, stream_min_bytes=SMALL))
    assert reads  # the example file's arrays are contiguous: no h5py read for them
    assert set(report.reading) == STREAMED
    for name in ("/acquisition/ElectricalSeries/data", "/acquisition/TwoPhotonSeries/data"):
        assert report.reading[name] == "memory map"
    assert report.reading["/units/spike_times"] == "raw HDF5 chunks, decoded by the workers"  # hdmf chunks it
    assert "read by: memory map (3), raw HDF5 chunks, decoded by the workers (1)" in report.summary()
    assert compare_zarr_stores(stock, out) == []
    assert_readers_match_source(subtests, source, out)


def test_output_reads_with_pynwb(source, tmp_path, subtests):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, codec="gzip", level=1, shards=2))
    with NWBHDF5IO(str(source), mode="r") as h5, NWBZarrIO(str(out), mode="r") as zio:
        want, got = h5.read(), zio.read()
        es_w, es_g = want.acquisition["ElectricalSeries"], got.acquisition["ElectricalSeries"]
        np.testing.assert_array_equal(es_g.data[:], es_w.data[:])
        assert es_g.data.dtype == np.int16 and es_g.rate == es_w.rate and es_g.conversion == es_w.conversion
        assert es_g.electrodes.table is got.electrodes and list(es_g.electrodes.data[:]) == list(range(24))
        assert len(got.electrodes) == 24
        np.testing.assert_array_equal(got.electrodes["x"].data[:], want.electrodes["x"].data[:])
        lfp_w = want.processing["ecephys"]["LFP"]["LFP"]
        lfp_g = got.processing["ecephys"]["LFP"]["LFP"]
        np.testing.assert_array_equal(lfp_g.data[:], lfp_w.data[:])
        assert list(lfp_g.electrodes.data[:]) == list(range(0, 24, 2))
        tps_w, tps_g = want.acquisition["TwoPhotonSeries"], got.acquisition["TwoPhotonSeries"]
        np.testing.assert_array_equal(tps_g.data[:], tps_w.data[:])
        assert tps_g.data.dtype == np.uint16
        assert tps_g.imaging_plane is got.imaging_planes["plane0"]  # a link, resolved
        assert len(got.units) == len(want.units) == 16
        for i in range(16):
            np.testing.assert_array_equal(got.units["spike_times"][i], want.units["spike_times"][i])
            assert list(got.units["electrodes"][i].index) == list(want.units["electrodes"][i].index)
        assert len(got.units["spike_times"][0]) == 0  # the empty ragged row survives
        assert list(got.units["quality"][:]) == list(want.units["quality"][:])
        assert got.identifier == want.identifier and got.experimenter == want.experimenter
    assert_readers_match_source(subtests, source, out)  # gzip level 1, sharded


@pytest.mark.parametrize(
    ("codec", "level", "name", "config"),
    [
        ("zstd", 5, "zstd", {"level": 5, "checksum": False}),
        ("gzip", 2, "gzip", {"level": 2}),
        ("lz4", None, "numcodecs.lz4", {"acceleration": 1}),
        ("blosc", 3, "blosc", None),
    ],
)
def test_codecs_change_storage_not_content(source, stock, tmp_path, subtests, codec, level, name, config):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(codec=codec, level=level, stream_min_bytes=SMALL))
    assert compare_zarr_stores(stock, out, ignore_layout=True) == []
    assert compare_nwb_files(source, out) == []
    for path in [*STREAMED, "/general/extracellular_ephys/electrodes/x"]:  # streamed and copied numeric arrays
        codecs = zarr.open_array(str(out) + path, mode="r").metadata.to_dict()["codecs"]
        compressor = codecs[-1]
        assert compressor["name"] == name, (path, codecs)
        if config is not None:
            assert compressor["configuration"] == config
    if codec == "blosc":
        assert compressor["configuration"]["clevel"] == 3 and compressor["configuration"]["cname"] == "zstd"
    assert_readers_match_source(subtests, source, out)


@pytest.mark.parametrize(
    ("options", "chunks", "shards"),
    [
        ({"chunks": (1000, 8)}, (1000, 8), None),
        ({"chunks": (1000, 8), "shards": 3}, (1000, 8), (3000, 24)),
        ({"chunks": (2000, 8), "shards": (4000, 16)}, (2000, 8), (4000, 16)),
        ({"chunk_mb": 0.02}, None, None),
    ],
)
def test_layout_options(source, stock, tmp_path, subtests, options, chunks, shards):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, **options))
    assert compare_zarr_stores(stock, out, ignore_layout=True) == []
    array = zarr.open_array(str(out / "acquisition/ElectricalSeries/data"), mode="r")
    if chunks is not None:
        assert array.chunks == chunks
    else:
        assert np.prod(array.chunks) * 2 <= 0.02e6 * 1.01
    assert array.shards == shards
    np.testing.assert_array_equal(array[...], zarr.open_array(str(stock / "acquisition/ElectricalSeries/data"))[...])
    assert_readers_match_source(subtests, source, out)


def test_overwrite_replaces_and_verify_reports(source, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, codec="gzip"))
    with pytest.raises(ConvertError, match="exists; pass --overwrite"):
        convert(source, out, ConvertOptions())
    report = convert(source, out, ConvertOptions(stream_min_bytes=SMALL, overwrite=True, verify=True))
    assert report.verified is True and "verify:" in report.summary()
    codecs = zarr.open_array(str(out / "acquisition/ElectricalSeries/data"), mode="r").metadata.to_dict()["codecs"]
    assert codecs[-1]["name"] == "zstd"  # the new store, not the old gzip one
    assert siblings(out) == ["ours.nwb.zarr"]


def test_failed_convert_leaves_no_store(source, tmp_path, monkeypatch):
    def broken(self, selection):
        raise OSError("disk on fire")

    monkeypatch.setattr(H5DatasetIterator, "_get_data", broken)
    out = tmp_path / "ours.nwb.zarr"
    with pytest.raises(Exception, match="disk on fire"):
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    assert siblings(out) == []
    # with --overwrite, a failure keeps the old store as it was
    monkeypatch.undo()
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    before = compare_nwb_files(source, out)
    monkeypatch.setattr(H5DatasetIterator, "_get_data", broken)
    with pytest.raises(Exception, match="disk on fire"):
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL, overwrite=True))
    assert siblings(out) == ["ours.nwb.zarr"] and before == [] and compare_nwb_files(source, out) == []


def test_verification_detects_differences(source, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    bad = tmp_path / "bad.nwb.zarr"
    shutil.copytree(out, bad)
    root = zarr.open_group(str(bad), mode="a", use_consolidated=False)
    root["acquisition/ElectricalSeries/data"][5, 5] += 1
    root["units/spike_times"][3] += 1.0
    root["units/quality"][0] = "changed"
    root["general/extracellular_ephys/electrodes/x"].attrs["description"] = "changed"
    zarr.consolidate_metadata(str(bad))
    problems = compare_nwb_files(source, bad)
    assert len(problems) == 4, problems
    for where in ("ElectricalSeries/data", "spike_times", "quality", "attribute 'description'"):
        assert any(where in p for p in problems), (where, problems)
    assert len(compare_zarr_stores(out, bad)) == 4


def test_iterator_pickles_by_path(source):
    iterator = H5DatasetIterator(
        str(source), "/acquisition/ElectricalSeries/data", chunk_shape=(1000, 8), buffer_shape=(4000, 24)
    )
    copy = pickle.loads(pickle.dumps(iterator))
    assert copy.path == str(source) and copy.buffer_shape == (4000, 24)
    np.testing.assert_array_equal(
        copy._get_data((slice(0, 10), slice(0, 24))), iterator._get_data((slice(0, 10), slice(0, 24)))
    )
    assert len(pickle.dumps(iterator)) < 1000  # the path, never the data
    copy.close()
    iterator.close()


def test_bad_inputs(source, tmp_path):
    with pytest.raises(ConvertError, match="not found"):
        convert(tmp_path / "missing.nwb", tmp_path / "o.zarr")
    text = tmp_path / "text.nwb"
    text.write_text("not hdf5")
    with pytest.raises(ConvertError, match="not an HDF5 file"):
        convert(text, tmp_path / "o.zarr")
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ConvertError, match="not an NWB file"):
        convert(tmp_path / "plain.h5", tmp_path / "o.zarr")
    with pytest.raises(ConvertError, match="Zarr store|folder"):
        convert(tmp_path, tmp_path / "o.zarr")
    with pytest.raises(ConvertError, match="does not exist"):
        convert(source, tmp_path / "no" / "such" / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"codec": "snappy"}, "unknown codec"),
        ({"engine": "warp"}, "unknown engine"),
        ({"level": 3}, "needs --codec"),
        ({"codec": "gzip", "level": 12}, "gzip"),
        ({"codec": "lz4", "level": 0}, "lz4"),
        ({"chunks": (10,), "chunk_mb": 1.0}, "not both"),
        ({"shards": 0}, "shards"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ConvertError, match=match):
        ConvertOptions(**options)


# --------------------------------------------------------------------------------------
# The output: convert deletes nothing it did not create (issue 12, items 3, 5, 11)
# --------------------------------------------------------------------------------------
def test_overwrite_replaces_only_a_zarr_store(source, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    out.write_text("my notes")  # a plain file
    with pytest.raises(ConvertError, match=r"is a file, not a Zarr store; refusing to replace it"):
        convert(source, out, ConvertOptions(overwrite=True))
    assert out.read_text() == "my notes"
    out.unlink()
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a folder of the user's files
    with pytest.raises(ConvertError, match=r"is a folder that is not a Zarr store; refusing to replace it"):
        convert(source, out, ConvertOptions(overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"
    shutil.rmtree(out)
    store = tmp_path / "elsewhere.zarr"
    zarr.open_group(str(store), mode="w")
    out.symlink_to(store)  # a link, even to a store
    with pytest.raises(ConvertError, match=r"is a symbolic link, not a Zarr store; refusing to replace it"):
        convert(source, out, ConvertOptions(overwrite=True))
    assert out.is_symlink() and (store / "zarr.json").exists()
    out.unlink()
    assert siblings(out) == ["elsewhere.zarr"]  # no lock, no partial store left by the refusals
    # what may be replaced: a Zarr v3 or v2 store, an empty folder
    zarr.open_group(str(out), mode="w", zarr_format=2)
    convert(source, out, ConvertOptions(overwrite=True))
    assert compare_nwb_files(source, out) == []
    shutil.rmtree(out)
    out.mkdir()
    convert(source, out, ConvertOptions(overwrite=True))
    assert compare_nwb_files(source, out) == []
    assert siblings(out) == ["elsewhere.zarr", "ours.nwb.zarr"]


def appears_while_converting(monkeypatch, make) -> None:
    """Run ``make()`` once, while the first buffer of a streamed dataset is being read."""
    real = H5DatasetIterator._get_data
    done = threading.Lock()

    def read(self, selection):
        if done.acquire(blocking=False):
            make()
        return real(self, selection)

    monkeypatch.setattr(H5DatasetIterator, "_get_data", read)


def user_folder(out):
    def make():
        if out.exists():
            shutil.rmtree(out)  # the user replaced the old store by a folder of their own
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    return make


@pytest.mark.parametrize(
    ("overwrite", "before", "appears", "match"),
    [
        (False, False, "folder", "a folder that is not a Zarr store appeared at"),
        (False, False, "file", "a file appeared at"),
        (True, False, "store", "a Zarr v3 store appeared at"),  # --overwrite was not asked for it
        (True, True, "folder", "became a folder that is not a Zarr store while converting; refusing to replace it"),
    ],
)
def test_what_appears_at_the_output_meanwhile_is_left_alone(
    source, tmp_path, monkeypatch, overwrite, before, appears, match
):
    out = tmp_path / "ours.nwb.zarr"
    if before:
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    make = {
        "folder": user_folder(out),
        "file": lambda: out.write_text("mine"),
        "store": lambda: zarr.open_group(str(out), mode="w").attrs.update(owner="someone else"),
    }[appears]
    appears_while_converting(monkeypatch, make)
    kept = tmp_path / f"ours.nwb.zarr.converted-{os.getpid()}"
    with pytest.raises(ConvertError, match=match) as failure:
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL, overwrite=overwrite))
    assert str(failure.value).endswith(f"left it as it is; the finished output is at {kept}") or str(
        failure.value
    ).endswith(f"refusing to replace it; the finished output is at {kept}")
    if appears == "folder":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    elif appears == "file":
        assert out.read_text() == "mine"
    else:
        assert dict(zarr.open_group(str(out), mode="r").attrs) == {"owner": "someone else"}
    assert compare_nwb_files(source, kept) == []  # the finished conversion, kept
    assert siblings(out) == sorted([out.name, kept.name])


def test_overwrite_without_an_atomic_exchange(source, tmp_path, monkeypatch):
    """Where ``renameat2`` is missing (macOS, NFS), OUT is set aside, ours renamed in, the old one
    removed; an interrupt between the two renames puts the old store back."""
    from hdmf_zarr_parallel.tools import destination, renames

    monkeypatch.setattr(renames, "_renameat2", None)
    out = tmp_path / "ours.nwb.zarr"

    def compressor():
        return zarr.open_array(str(out / "acquisition/ElectricalSeries/data"), mode="r").metadata.codecs[-1]

    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, codec="gzip"))
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, codec="zstd", overwrite=True))
    assert compressor().to_dict()["name"] == "zstd" and siblings(out) == ["ours.nwb.zarr"]
    real = destination.rename_noreplace

    def interrupted(src, dst):
        if src.name.startswith(".ours.nwb.zarr.partial-"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(destination, "rename_noreplace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL, codec="gzip", overwrite=True))
    assert compressor().to_dict()["name"] == "zstd"  # the previous store, back in place
    assert siblings(out) == ["ours.nwb.zarr"] and compare_nwb_files(source, out) == []


def test_a_locked_output_is_refused_and_its_partial_store_left_alone(source, tmp_path):
    from hdmf_zarr_parallel.tools.destination import OutputLock

    out = tmp_path / "ours.nwb.zarr"
    theirs = tmp_path / ".ours.nwb.zarr.partial-1"  # what the lock holder is writing
    theirs.mkdir()
    with OutputLock(out):
        expected = f"another convert (process {os.getpid()}) is writing {out} (it holds .ours.nwb.zarr.lock)"
        with pytest.raises(ConvertError, match=re.escape(expected)):
            convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
        assert theirs.is_dir()
    assert siblings(out) == [".ours.nwb.zarr.partial-1"]  # the lock file goes with its holder
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL))  # unlocked: that one is stale now
    assert siblings(out) == ["ours.nwb.zarr"]


def test_leftovers_of_a_killed_convert_are_removed_or_put_back(source, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    stale = tmp_path / ".ours.nwb.zarr.partial-999999"
    (stale / "acquisition").mkdir(parents=True)
    (stale / "acquisition" / "c0").write_bytes(b"chunk")
    replaced = tmp_path / ".ours.nwb.zarr.old-999998"  # killed after the swap, before removing the old store
    shutil.copytree(out, replaced)
    unrelated = tmp_path / ".other.nwb.zarr.partial-999997"  # another output's: not ours to judge
    unrelated.mkdir()
    said = []
    convert(source, out, ConvertOptions(stream_min_bytes=SMALL, overwrite=True), log=said.append)
    assert siblings(out) == [".other.nwb.zarr.partial-999997", "ours.nwb.zarr"]
    assert f"removed {stale.name}, the partial output of a convert (process 999999) that was killed" in said
    assert any(line.startswith(f"removed {replaced.name}, the previous output") for line in said), said
    # killed between the two renames of a swap: OUT is missing, the old store is set aside
    out.rename(replaced)
    with pytest.raises(ConvertError, match="exists; pass --overwrite"):
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL), log=said.append)
    assert f"restored {out} from {replaced.name}: a convert (process 999998) was killed while replacing it" in said
    assert compare_nwb_files(source, out) == []
    assert siblings(out) == [".other.nwb.zarr.partial-999997", "ours.nwb.zarr"]


def test_cleanup_waits_for_writers_still_storing(source, tmp_path, monkeypatch):
    """A writer thread still storing chunks when the interrupt reaches convert (as an interrupted
    ``Thread.join()`` can leave one): the partial store is removed only once it has stopped."""
    from hdmf_zarr_parallel.io import NWBParallelZarrIO

    def interrupted_export(self, *args, **kwargs):
        root = Path(self.path)

        def store_late():
            for i in range(15):
                time.sleep(0.05)
                (root / "acquisition" / "c" / str(i)).parent.mkdir(parents=True, exist_ok=True)
                (root / "acquisition" / "c" / str(i)).write_bytes(b"chunk")

        threading.Thread(target=store_late, name="hzp-writer-late", daemon=True).start()
        raise KeyboardInterrupt

    monkeypatch.setattr(NWBParallelZarrIO, "export", interrupted_export)
    out = tmp_path / "ours.nwb.zarr"
    with pytest.raises(KeyboardInterrupt):
        convert(source, out, ConvertOptions(stream_min_bytes=SMALL))
    assert not [t for t in threading.enumerate() if t.name == "hzp-writer-late"]
    time.sleep(0.2)
    assert siblings(out) == []


# --------------------------------------------------------------------------------------
# --verify and byte order (issue 12, item 8)
# --------------------------------------------------------------------------------------
def big_endian_nwb(path):
    """An NWB file whose numeric datasets are big-endian (``>f8``, ``>i4``), as some writers leave them."""
    import h5py
    from pynwb import NWBFile, TimeSeries

    nwbfile = NWBFile(
        session_description="big-endian", identifier="big-endian", session_start_time=datetime(2024, 1, 1, tzinfo=UTC)
    )
    n = 200_000
    nwbfile.add_acquisition(TimeSeries(name="f8", data=np.linspace(-1, 1, n), unit="V", timestamps=np.arange(n) / 1e3))
    nwbfile.add_acquisition(TimeSeries(name="i4", data=np.arange(n, dtype=np.int32) - 7, unit="V", rate=1e3))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    with h5py.File(path, "r+") as f:
        for name, dtype in [("f8/data", ">f8"), ("f8/timestamps", ">f8"), ("i4/data", ">i4")]:
            old = f["acquisition/" + name]
            values, attrs = old[...], dict(old.attrs)
            del f["acquisition/" + name]
            new = f.create_dataset("acquisition/" + name, data=values.astype(dtype))
            new.attrs.update(attrs)
    return path


def test_verify_compares_values_whatever_their_byte_order(tmp_path, subtests):
    import h5py

    from hdmf_zarr_parallel.tools.verify import _equal

    source = big_endian_nwb(tmp_path / "be.nwb")
    with h5py.File(source, "r") as f:
        assert f["acquisition/f8/data"].dtype.str == ">f8" and f["acquisition/i4/data"].dtype.str == ">i4"
    out = tmp_path / "be.nwb.zarr"
    report = convert(source, out, ConvertOptions(verify=True, stream_min_bytes=SMALL))
    assert report.verified is True
    assert siblings(out) == ["be.nwb", "be.nwb.zarr"]
    data = zarr.open_array(str(out / "acquisition/f8/data"), mode="r")
    np.testing.assert_array_equal(data[...], np.linspace(-1, 1, 200_000))
    assert_readers_match_source(subtests, source, out, names=None)  # big-endian in HDF5: values, not bytes
    # a real difference in value still fails, and so does a different type of the same values
    zarr.open_array(str(out / "acquisition/i4/data"), mode="a")[3] = 0
    problems = compare_nwb_files(source, out)
    assert len(problems) == 1 and "acquisition/i4/data: data differ (>i4[200000] vs int32[200000])" in problems[0]
    assert not _equal(np.arange(3, dtype=">i4"), np.arange(3, dtype="<i8"), strict_dtype=True)
    assert _equal(np.arange(3, dtype=">i4"), np.arange(3, dtype="<i4"), strict_dtype=True)
