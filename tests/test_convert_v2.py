"""``convert`` with an NWB Zarr **v2** store as input: the same content as stock's v2 → v3 conversion.

Two v2 stores are converted (both under ``tests/data``): ``ephys_v2.nwb.zarr``, written with
hdmf-zarr 0.13 / zarr 2 by ``tests/data/make_v2_fixture.py`` (int16 ephys in Blosc-zstd chunks
with a partial last chunk, a gzip + delta TimeSeries with timestamps, uncompressed ImageSeries
frames, LFP, units, an electrodes table with its pickle-encoded ``group`` references), and
hdmf-zarr 0.14's own v2 test file. Stock's documented route, ``NWBZarrV2IO.convert_to_v3``, is
the reference: the outputs are compared array by array and attribute by attribute
(``compare_zarr_stores``), our output is compared with the v2 input by reading both back
(``compare_nwb_files``), and PyNWB reads the output.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numcodecs.pickles
import numpy as np
import pytest
import zarr
from hdmf_zarr import NWBZarrV2IO
from hdmf_zarr.nwb import NWBZarrIO

from hdmf_zarr_parallel.tools import zarr_v2
from hdmf_zarr_parallel.tools.convert import ConvertError, ConvertOptions, convert
from hdmf_zarr_parallel.tools.verify import compare_nwb_files, compare_zarr_stores
from hdmf_zarr_parallel.tools.zarr_v2 import ZarrV2DatasetIterator

pytestmark = [
    pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:hdmf_zarr.backend_zarrv2"),
]

DATA = Path(__file__).parent / "data"
SOURCES = {
    "ephys": (DATA / "ephys_v2.nwb.zarr", 1000),  # (store, stream_min_bytes)
    "hdmf_zarr": (DATA / "hdmf_zarr_v2" / "nwb_zarrv2_test.nwb.zarr", 64),  # its arrays are tiny
}
STREAMED = {
    "ephys": {
        "/acquisition/raw/data",
        "/acquisition/pressure/data",
        "/acquisition/pressure/timestamps",
        "/acquisition/camera/data",
        "/processing/ecephys/LFP/LFP/data",
    },
    "hdmf_zarr": {"/acquisition/test_ephys/data", "/acquisition/test_ephys/timestamps", "/units/spike_times"},
}


@contextlib.contextmanager
def trusted():
    """What stock needs besides ``allow_pickle=True`` with numcodecs 0.17 (see zarr_v2.py)."""
    before = numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE
    numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = before


@pytest.fixture(scope="module", params=sorted(SOURCES))
def case(request, tmp_path_factory):
    """(name, a copy of the v2 store, stream_min_bytes, stock's conversion of it)."""
    name = request.param
    store, small = SOURCES[name]
    root = tmp_path_factory.mktemp(name)
    source = root / store.name
    shutil.copytree(store, source)
    stock = root / "stock.nwb.zarr"
    with trusted():
        NWBZarrV2IO.convert_to_v3(str(source), str(stock), allow_pickle=True)
    return name, source, small, stock


@pytest.fixture(scope="module")
def ephys(tmp_path_factory):
    store, small = SOURCES["ephys"]
    source = tmp_path_factory.mktemp("ephys") / store.name
    shutil.copytree(store, source)
    return source


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("engine", ["threads", "serial", "processes"])
def test_default_convert_equals_stock_conversion(case, tmp_path, engine):
    name, source, small, stock = case
    if engine == "processes" and name != "ephys":
        pytest.skip("one process-pool run is enough (spawn start-up is slow)")
    out = tmp_path / "ours.nwb.zarr"
    report = convert(source, out, ConvertOptions(engine=engine, workers=2, stream_min_bytes=small, allow_pickle=True))
    assert {n for n, _ in report.streamed} == STREAMED[name]
    assert set(report.reading.values()) == {zarr_v2.READING}
    assert report.copied > 0 and report.engine.startswith(engine)
    # every group, array (values, dtype, shape, chunks, codecs, fill value) and attribute, references included
    assert compare_zarr_stores(stock, out) == []
    assert compare_nwb_files(source, out, allow_pickle=True) == []
    assert siblings(out) == ["ours.nwb.zarr"]
    assert numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE is False  # set for the trusted read only


def test_stock_conversion_keeps_v2_codecs_and_attributes(case, tmp_path):
    """What "the same as stock" means for an array: v2 chunks, codecs and all its ``.zattrs`` (``zarr_dtype``)."""
    name, source, small, stock = case
    out = tmp_path / "ours.nwb.zarr"
    convert(source, out, ConvertOptions(engine="threads", stream_min_bytes=small, allow_pickle=True))
    for path in STREAMED[name]:
        v2 = zarr.open_array(store=str(source), path=path.strip("/"), mode="r", zarr_format=2)
        ours = zarr.open_array(str(out) + path, mode="r")
        assert ours.metadata.zarr_format == 3 and ours.chunks == v2.chunks and ours.dtype == v2.dtype
        assert dict(ours.attrs) == {**dict(v2.attrs)}, path  # no _DTYPE, as stock's copy
        np.testing.assert_array_equal(ours[...], v2[...])
    if name == "ephys":
        codecs = zarr.open_array(str(out / "acquisition/raw/data"), mode="r").metadata.to_dict()["codecs"]
        assert codecs[-1] == {
            "name": "numcodecs.blosc",
            "configuration": {"cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0},
        }
        ts = zarr.open_array(str(out / "acquisition/pressure/timestamps"), mode="r").metadata.to_dict()["codecs"]
        assert [c["name"] for c in ts] == ["numcodecs.delta", "bytes", "numcodecs.gzip"]


def test_output_reads_with_pynwb(ephys, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    convert(ephys, out, ConvertOptions(engine="threads", workers=2, stream_min_bytes=1000, allow_pickle=True))
    with trusted(), NWBZarrV2IO(str(ephys), mode="r", allow_pickle=True) as v2, NWBZarrIO(str(out), mode="r") as zio:
        want, got = v2.read(), zio.read()
        raw_w, raw_g = want.acquisition["raw"], got.acquisition["raw"]
        np.testing.assert_array_equal(raw_g.data[:], raw_w.data[:])
        assert raw_g.data.dtype == np.int16 and raw_g.data.shape == (24000, 8)
        assert (raw_g.rate, raw_g.starting_time, raw_g.conversion, raw_g.offset) == (30000.0, 0.5, 0.195e-6, -1e-3)
        assert raw_g.comments == raw_w.comments == "a comment with a quote ' and a slash /"
        assert raw_g.electrodes.table is got.electrodes and list(raw_g.electrodes.data[:]) == list(range(8))
        assert len(got.electrodes) == 8
        groups = got.electrodes["group"][:]
        assert all(g is got.electrode_groups["shank0"] for g in groups)  # the references, resolved
        assert got.electrode_groups["shank0"].device is got.devices["probe"]
        assert list(got.electrodes["label"][:]) == [f"ch{i:02d}" for i in range(8)]
        np.testing.assert_array_equal(got.electrodes["x"].data[:], want.electrodes["x"].data[:])
        p_w, p_g = want.acquisition["pressure"], got.acquisition["pressure"]
        np.testing.assert_array_equal(p_g.data[:], p_w.data[:])
        np.testing.assert_array_equal(p_g.timestamps[:], p_w.timestamps[:])
        assert p_g.unit == "kPa" and p_g.timestamps.dtype == np.float64
        cam_w, cam_g = want.acquisition["camera"], got.acquisition["camera"]
        np.testing.assert_array_equal(cam_g.data[:], cam_w.data[:])
        assert cam_g.data.dtype == np.uint8 and cam_g.rate == 30.0
        lfp_g = got.processing["ecephys"]["LFP"]["LFP"]
        np.testing.assert_array_equal(lfp_g.data[:], want.processing["ecephys"]["LFP"]["LFP"].data[:])
        assert list(lfp_g.electrodes.data[:]) == [0, 2, 4, 6]
        assert len(got.units) == 5
        for i in range(5):
            np.testing.assert_array_equal(got.units["spike_times"][i], want.units["spike_times"][i])
            assert list(got.units["electrodes"][i].index) == [i]
        assert list(got.units["quality"][:]) == ["good", "mua", "good", "mua", "good"]
        assert got.identifier == want.identifier == "hdmf-zarr-parallel-v2-fixture"
        assert list(got.experimenter) == ["Ramón y Cajal, Santiago", "Golgi, Camillo"]
        assert got.notes == "Ünïcödé notes survive the conversion" and got.subject.species == "Mus musculus"
        assert got.session_start_time == want.session_start_time


def test_codec_and_layout_options_change_storage_not_content(case, tmp_path):
    name, source, small, stock = case
    out = tmp_path / "ours.nwb.zarr"
    report = convert(
        source, out, ConvertOptions(stream_min_bytes=small, codec="gzip", level=2, shards=2, allow_pickle=True)
    )
    assert compare_zarr_stores(stock, out, ignore_layout=True) == []
    assert compare_nwb_files(source, out, allow_pickle=True) == []
    assert STREAMED[name] <= {n for n, _ in report.streamed}  # with a codec, small numeric arrays too
    for path, _ in report.streamed:
        codecs = zarr.open_array(str(out) + path, mode="r").metadata.to_dict()["codecs"]
        inner = codecs[0]["configuration"]["codecs"] if codecs[0]["name"] == "sharding_indexed" else codecs
        assert inner[-1] == {"name": "gzip", "configuration": {"level": 2}}, (path, codecs)


def test_verify_from_the_command_line(ephys, tmp_path):
    out = tmp_path / "session.nwb.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel.tools.cli", "convert", str(ephys), str(out), "--allow-pickle",
         "--verify", "--engine", "threads", "--workers", "2", "--stream-min-mb", "0.001"],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "verify: every group, dataset, attribute, reference and link matches" in result.stdout
    assert "5 dataset(s) streamed" in result.stdout and "read by: zarr, v2 chunks (5)" in result.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel.tools.cli", "convert", str(ephys), "other.nwb.zarr"],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and "--allow-pickle" in lines[0], refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb.zarr"]


def test_verification_detects_differences(ephys, tmp_path):
    out = tmp_path / "ours.nwb.zarr"
    convert(ephys, out, ConvertOptions(stream_min_bytes=1000, allow_pickle=True))
    root = zarr.open_group(str(out), mode="a", use_consolidated=False)
    root["acquisition/raw/data"][100, 3] += 1
    root["acquisition/pressure/timestamps"].attrs["unit"] = "minutes"
    zarr.consolidate_metadata(str(out))
    problems = compare_nwb_files(ephys, out, allow_pickle=True)
    assert len(problems) == 2, problems
    assert any("raw/data: data differ" in p for p in problems)
    assert any("timestamps: attribute 'unit'" in p for p in problems)


@pytest.fixture
def no_reads(monkeypatch):
    """Fails the test if any v2 dataset is read for streaming."""

    def read(self, selection):
        raise AssertionError("data moved before the input was checked")

    monkeypatch.setattr(ZarrV2DatasetIterator, "_get_data", read)


def test_pickle_is_refused_unless_allowed_before_any_data_moves(ephys, tmp_path, no_reads):
    out = tmp_path / "o.nwb.zarr"
    with pytest.raises(ConvertError, match=r"pickle-encoded data.*electrodes/group.*--allow-pickle"):
        convert(ephys, out, ConvertOptions(stream_min_bytes=1000))
    assert list(tmp_path.iterdir()) == []
    assert numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE is False


def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _unknown_codec(store: Path) -> None:
    def change(meta):
        meta["compressor"] = {"id": "nosuchcodec"}

    _edit_json(store / "acquisition/raw/data/.zarray", change)
    _edit_json(store / ".zmetadata", lambda m: change(m["metadata"]["acquisition/raw/data/.zarray"]))


BAD_INPUTS = {
    "not NWB": (lambda s: _edit_json(s / ".zattrs", lambda m: m.pop("nwb_version")), "Zarr v2 store but not an NWB"),
    "bad .zgroup": (lambda s: (s / ".zgroup").write_text("{zarr_format: 2"), r"cannot read .*\.zgroup"),
    "no .zgroup": (lambda s: (s / ".zgroup").unlink(), "no .zgroup"),
    "v3 store": (lambda s: (s / "zarr.json").write_text("{}"), "is a Zarr v3 store"),
    "a v2 array": (lambda s: (s / ".zarray").write_text("{}"), "Zarr v2 array, not an NWB file"),
    "broken array metadata": (
        lambda s: (s / "acquisition/raw/data/.zarray").write_text("{not json"),
        r"1 entry of .* cannot be read: /acquisition/raw/data",
    ),
    "unknown codec": (_unknown_codec, r"cannot be read: /acquisition/raw/data: .*nosuchcodec"),
    "missing metadata": (
        lambda s: (s / "acquisition/raw/data/.zarray").unlink(),
        r"cannot be read: /acquisition/raw/data",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_v2_inputs_fail_clearly_before_any_data_moves(ephys, tmp_path, kind, no_reads):
    mutate, match = BAD_INPUTS[kind]
    source = tmp_path / "in" / "session.nwb.zarr"
    shutil.copytree(ephys, source)
    mutate(source)
    out = tmp_path / "o.nwb.zarr"
    with pytest.raises(ConvertError, match=match):
        convert(source, out, ConvertOptions(stream_min_bytes=1000, allow_pickle=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_plain_folder_is_not_taken_for_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConvertError, match="is a folder, not a Zarr store"):
        convert(tmp_path, tmp_path.parent / "o.nwb.zarr")
    assert not zarr_v2.is_v2_store(tmp_path) and zarr_v2.is_v2_store(SOURCES["ephys"][0])


def test_a_corrupt_chunk_fails_the_write_and_leaves_no_store(ephys, tmp_path):
    source = tmp_path / "in" / "session.nwb.zarr"
    shutil.copytree(ephys, source)
    (source / "acquisition/raw/data/2.0").write_bytes(b"not blosc" * 50)
    out = tmp_path / "o.nwb.zarr"
    with pytest.raises(Exception, match=r"acquisition/raw/data.*8192:12288"):
        convert(source, out, ConvertOptions(engine="threads", workers=2, stream_min_bytes=1000, allow_pickle=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_iterator_pickles_by_path(ephys):
    iterator = ZarrV2DatasetIterator(str(ephys), "/acquisition/raw/data", chunk_shape=(4096, 8), buffer_shape=(8192, 8))
    blob = pickle.dumps(iterator)
    assert len(blob) < 1000  # the path, never the data
    copy = pickle.loads(blob)
    assert copy.path == str(ephys) and copy.buffer_shape == (8192, 8) and copy.dtype == np.int16
    np.testing.assert_array_equal(
        copy._get_data((slice(4000, 9000), slice(0, 8))), iterator._get_data((slice(4000, 9000), slice(0, 8)))
    )
    assert copy._get_maxshape() == (24000, 8)
