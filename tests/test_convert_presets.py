"""``convert --layout``: the GPU presets write the codecs, chunks and shards they name, values
unchanged and read bit-exactly by zarr-python, tensorstore and zarrs; contradicting options are
refused before the output exists (issue 15, part 4)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

from hdmf_zarr_parallel.tools.convert import ConvertError, ConvertOptions, convert
from hdmf_zarr_parallel.tools.convert_presets import PRESETS, preset_layout
from hdmf_zarr_parallel.tools.examples import write_example_hdf5
from hdmf_zarr_parallel.tools.verify import compare_nwb_files
from readers import assert_independent_readers_match
from test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

EPHYS = "/acquisition/ElectricalSeries/data"
STREAMED = (EPHYS, "/acquisition/TwoPhotonSeries/data", "/processing/ecephys/LFP/LFP/data", "/units/spike_times")
SMALL = 1000  # stream every numeric dataset of at least 1000 bytes


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A gzip + shuffle NWB HDF5 file (as conversion tools write): the presets drop the source's shuffle."""
    path = tmp_path_factory.mktemp("src") / "session.nwb"
    return write_example_hdf5(path, compressed=True, seconds=1.0, channels=128, frames=24, frame_side=64, units=8)


def test_the_ephys_geometry_is_the_measured_one():
    """An int16 recording of 384 channels gets the layouts benchmarks/bench_gpu_layouts.py measures."""
    assert preset_layout(PRESETS["gpu-shards"], (1_350_000, 384), 2) == ((512, 64), (4096, 384))
    assert preset_layout(PRESETS["gpu-blosc"], (1_350_000, 384), 2) == ((32768, 64), None)


def test_chunks_and_shards_stay_near_their_targets():
    for preset in PRESETS.values():
        for shape, itemsize in [((10**7,), 8), ((10**6, 3), 4), ((500, 512, 512), 2), ((1000, 100000), 4), ((9, 7), 2)]:
            chunks, shards = preset_layout(preset, shape, itemsize)
            assert all(1 <= c <= s for c, s in zip(chunks, shape, strict=True)), (preset.name, shape, chunks)
            assert np.prod(chunks) * itemsize <= preset.chunk_bytes
            if shards is not None:
                assert all(s % c == 0 for s, c in zip(shards, chunks, strict=True))
                assert np.prod(shards) * itemsize <= max(preset.shard_bytes, np.prod(chunks) * itemsize * 2)


def codec_chain(array: zarr.Array) -> list[dict]:
    return array.metadata.to_dict()["codecs"]


@pytest.mark.parametrize("layout", ["gpu-shards", "gpu-blosc"])
def test_a_preset_writes_what_it_names(source, tmp_path, subtests, layout):
    out = tmp_path / "ours.nwb.zarr"
    report = convert(source, out, ConvertOptions(engine="threads", workers=2, stream_min_bytes=SMALL, layout=layout))
    streamed = {name for name, _ in report.streamed}
    assert set(STREAMED) <= streamed
    assert compare_nwb_files(source, out) == []
    preset = PRESETS[layout]
    with h5py.File(source, "r") as f:
        for name in sorted(streamed):
            want = f[name][()]
            array = zarr.open_array(str(out) + name, mode="r")
            chunks, shards = preset_layout(preset, want.shape, want.dtype.itemsize)
            assert (array.chunks, array.shards) == (chunks, shards), name
            chain = codec_chain(array)
            if layout == "gpu-shards":
                assert [c["name"] for c in chain] == ["sharding_indexed"], chain
                inner = chain[0]["configuration"]["codecs"]
                assert [c["name"] for c in inner] == ["bytes", "zstd"], inner  # the source's shuffle is dropped
                assert inner[1]["configuration"] == {"level": 0, "checksum": False}
            else:
                assert [c["name"] for c in chain] == ["bytes", "blosc"], chain
                config = chain[1]["configuration"]
                assert (config["cname"], config["clevel"], config["shuffle"]) == ("zstd", 5, "shuffle")
                assert config["typesize"] == want.dtype.itemsize
            np.testing.assert_array_equal(array[...], want)  # zarr-python
            assert_independent_readers_match(out / name.lstrip("/"), want, subtests, name=name)
        # the ephys recording in the preset's own terms: 64 KiB inner chunks, 3 MiB shards / 4 MiB chunks
        ephys = zarr.open_array(str(out) + EPHYS, mode="r")
        assert ephys.chunks == ((512, 64) if layout == "gpu-shards" else (30000, 64))
        assert ephys.shards == ((12288, 128) if layout == "gpu-shards" else None)


@pytest.mark.parametrize(
    "given",
    [{"shards": 4}, {"chunks": (100, 8)}, {"chunk_mb": 1.0}, {"codec": "gzip"}, {"codec": "zstd", "level": 3}],
)
def test_a_preset_refuses_the_options_it_sets(given):
    with pytest.raises(ConvertError, match="--layout gpu-shards sets the codec") as caught:
        ConvertOptions(layout="gpu-shards", **given)
    for name in given:
        assert "--" + name.replace("_", "-") in str(caught.value)


def test_keep_takes_the_layout_options_and_unknown_layouts_are_refused():
    assert ConvertOptions(layout="keep", shards=4, codec="zstd").shards == 4
    with pytest.raises(ConvertError, match="unknown layout 'gpu'"):
        ConvertOptions(layout="gpu")


def test_the_command_line_refuses_a_contradiction_before_the_output_exists(source, tmp_path):
    out = tmp_path / "out.nwb.zarr"
    result = run_cli("convert", str(source), str(out), "--layout", "gpu-shards", "--shards", "4", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert "--layout gpu-shards" in line and "--shards" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made, not even a lock or partial store


def test_the_command_line_writes_a_preset(source, tmp_path):
    out = tmp_path / "out.nwb.zarr"
    args = ("convert", str(source), str(out), "--layout", "gpu-blosc", "--engine", "threads", "--stream-min-mb", "0")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    array = zarr.open_array(str(out) + EPHYS, mode="r")
    assert [c["name"] for c in codec_chain(array)] == ["bytes", "blosc"]
    with h5py.File(source, "r") as f:
        np.testing.assert_array_equal(array[...], f[EPHYS][()])
