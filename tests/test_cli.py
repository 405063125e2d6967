"""The ``hdmf-zarr-parallel`` command, run as a subprocess the way users run it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest


def run_cli(*args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel.cli", *args],
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


@pytest.mark.parametrize("command", ["convert", "bench"])
def test_stubs_say_not_implemented(tmp_path, command):
    result = run_cli(command, "anything", cwd=tmp_path)
    assert result.returncode == 2
    assert "not implemented yet" in assert_one_line_error(result)


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
