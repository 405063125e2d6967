"""The ``hdmf-zarr-parallel`` command, run as a subprocess the way users run it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest


def run_cli(*args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel.tools.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hdmf-zarr-parallel")
    return lines[0]


def test_info_lists_versions_and_auto_engine(tmp_path):
    result = run_cli("info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for dist in ("hdmf", "hdmf-zarr", "zarr", "numcodecs", "pynwb", "numpy"):
        assert any(line.split()[:2] == [dist, metadata.version(dist)] for line in out.splitlines()), (dist, out)
    assert "python" in out and "GPU" in out
    auto = [line for line in out.splitlines() if line.startswith("auto engine: ")]
    assert len(auto) == 1 and " — " in auto[0]
    assert auto[0].split()[2] in ("gpu", "threads")


def test_tiny_demo_writes_verifies_and_compares(tmp_path):
    workdir = tmp_path / "work"
    result = run_cli("demo", "--seconds", "1", "--channels", "16", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "read back with stock NWBZarrIO: PASS" in out
    assert "FAIL" not in out
    assert out.rstrip().endswith("PASS")
    assert "auto engine: " in out and "engine used: " in out
    assert "hdmf-zarr stock, serial" in out and "speed-up: " in out
    assert (workdir / "demo_parallel.nwb.zarr").is_dir() and (workdir / "demo_stock.nwb.zarr").is_dir()
    assert "Traceback" not in result.stderr


def test_demo_with_explicit_engine_in_temporary_folder(tmp_path):
    result = run_cli("demo", "--seconds", "0.5", "--channels", "4", "--engine", "serial", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "engine used: serial" in result.stdout
    assert result.stdout.rstrip().endswith("PASS")


def test_bad_engine_is_one_line_error(tmp_path):
    result = run_cli("demo", "--engine", "warp-drive", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert "warp-drive" in line and "threads" in line


@pytest.mark.parametrize("args", [("demo", "--seconds", "0"), ("demo", "--channels", "x"), ("frobnicate",), ()])
def test_bad_arguments_are_one_line_errors(tmp_path, args):
    assert_one_line_error(run_cli(*args, cwd=tmp_path))


def test_runtime_error_is_one_line_without_traceback(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = run_cli("demo", "--seconds", "0.1", "--channels", "2", "--workdir", str(not_a_folder), cwd=tmp_path)
    assert result.returncode == 1
    assert "error" in assert_one_line_error(result)


@pytest.fixture(scope="module")
def example_nwb(tmp_path_factory):
    from hdmf_zarr_parallel.tools.examples import write_example_hdf5

    return write_example_hdf5(tmp_path_factory.mktemp("nwb") / "session.nwb", seconds=0.5, channels=8, frames=20)


def test_convert_verifies_and_reads_back(tmp_path, example_nwb):
    out = tmp_path / "session.nwb.zarr"
    result = run_cli(
        "convert", str(example_nwb), str(out), "--verify", "--codec", "gzip", "--level", "4",
        "--stream-min-mb", "0.01", "--shards", "2", "--engine", "threads", "--workers", "2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"-> {out}" in result.stdout and "engine threads" in result.stdout
    assert "verify: every group, dataset, attribute, reference and link matches" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb.zarr"]
    from hdmf_zarr.nwb import NWBZarrIO

    with NWBZarrIO(str(out), mode="r") as io:
        nwbfile = io.read()
        assert nwbfile.acquisition["ElectricalSeries"].data.shape == (15000, 8)
        assert set(nwbfile.processing["ecephys"].data_interfaces) == {"LFP"}
    again = run_cli("convert", str(example_nwb), str(out), cwd=tmp_path)
    assert "exists; pass --overwrite" in assert_one_line_error(again)
    replaced = run_cli("convert", str(example_nwb), str(out), "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("missing.nwb", "o.nwb.zarr"), "input not found"),
        (("text.nwb", "o.nwb.zarr"), "not an HDF5 file"),
        (("plain.h5", "o.nwb.zarr"), "not an NWB file"),
        (("{nwb}", "o.nwb.zarr", "--codec", "snappy"), "invalid choice: 'snappy'"),
        (("{nwb}", "o.nwb.zarr", "--engine", "warp"), "invalid choice: 'warp'"),
        (("{nwb}", "o.nwb.zarr", "--level", "3"), "--level needs --codec"),
        (("{nwb}", "o.nwb.zarr", "--codec", "gzip", "--level", "11"), "gzip"),
        (("{nwb}", "o.nwb.zarr", "--chunks", "0,4"), "--chunks"),
        (("{nwb}", "o.nwb.zarr", "--chunks", "4", "--chunk-mb", "1"), "not allowed with"),
        (("{nwb}",), "required"),
    ],
)
def test_convert_errors_are_one_line(tmp_path, example_nwb, args, expected):
    import h5py

    (tmp_path / "text.nwb").write_text("not an HDF5 file")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = [1, 2, 3]
    result = run_cli("convert", *(a.replace("{nwb}", str(example_nwb)) for a in args), cwd=tmp_path)
    assert expected in assert_one_line_error(result)
    assert not (tmp_path / "o.nwb.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_convert_with_unusable_engine_leaves_nothing(tmp_path, example_nwb):
    pytest.importorskip("zarr")
    from hdmf_zarr_parallel.engines import choose_auto_engine

    if choose_auto_engine()[0] == "gpu":
        pytest.skip("a GPU is usable here")
    result = run_cli("convert", str(example_nwb), "o.nwb.zarr", "--engine", "gpu", cwd=tmp_path)
    assert "gpu" in assert_one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_convert_on_a_local_dask_cluster(tmp_path, example_nwb):
    pytest.importorskip("distributed")
    out = tmp_path / "o.nwb.zarr"
    result = run_cli(
        "convert", str(example_nwb), str(out), "--engine", "dask", "--scheduler", "local", "--workers", "2",
        "--stream-min-mb", "0.01", "--verify", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "with engine dask" in result.stdout and "verify: every group" in result.stdout
    bad = run_cli("convert", str(example_nwb), str(out), "--scheduler", "local", cwd=tmp_path)
    assert "--scheduler needs --engine dask" in assert_one_line_error(bad)


def test_bench_quick_prints_table_and_saves_png(tmp_path):
    png = tmp_path / "charts" / "bench.png"
    result = run_cli(
        "bench", "--quick", "--writers", "stock-serial,threads,gpu", "--png", str(png), "--ephys-mb", "8",
        "--imaging-mb", "4", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = [i for i, line in enumerate(lines) if line.split()[:5] == ["case", "writer", "seconds", "MB/s", "x"]]
    assert len(header) == 1, result.stdout
    table = lines[header[0] + 2 :]
    for case in ("ephys", "imaging"):
        stock = [line for line in table if line.startswith(case) and "stock hdmf-zarr, serial" in line]
        ours = [line for line in table if line.startswith(case) and "ours, threads" in line]
        assert len(stock) == 1 and stock[0].rstrip().endswith("1.00")
        assert len(ours) == 1 and float(ours[0].split()[-2]) > 0  # MB/s
    assert any("ours, gpu" in line for line in table)  # measured, or skipped with the reason
    assert f"chart: {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["charts"]  # data and outputs went to a temporary folder


@pytest.mark.parametrize("args", [("--cases", "eeg"), ("--writers", "threads,warp"), ("--repeats", "0")])
def test_bench_bad_arguments(tmp_path, args):
    assert_one_line_error(run_cli("bench", "--quick", *args, cwd=tmp_path))


def test_python_dash_m_package_and_version(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("hdmf-zarr-parallel ")


def test_convert_overwrite_refuses_a_plain_file(tmp_path, example_nwb):
    out = tmp_path / "o.nwb.zarr"
    out.write_text("not a store")
    result = run_cli("convert", str(example_nwb), str(out), "--overwrite", cwd=tmp_path)
    assert assert_one_line_error(result) == (
        f"hdmf-zarr-parallel: convert: output {out} is a file, not a Zarr store; refusing to replace it"
    )
    assert out.read_text() == "not a store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.nwb.zarr"]
