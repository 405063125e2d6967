"""``convert`` as a real process: Ctrl-C, SIGTERM and SIGKILL in the middle of a conversion, and two
conversions to one output at once. Each conversion runs ``hdmf-zarr-parallel convert`` on a real
NWB HDF5 file, the serial engine with gzip level 6 making it last several seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdmf_zarr_parallel.tools.examples import write_example_hdf5

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SLOW = ("--engine", "serial", "--codec", "gzip", "--level", "6", "--no-progress")


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """About 46 MB of int16 ephys, contiguous (read by memory map): seconds to convert serially."""
    return write_example_hdf5(tmp_path_factory.mktemp("nwb") / "session.nwb", seconds=12, channels=64, frames=20)


def start(source: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hdmf_zarr_parallel", "convert", str(source), str(out), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"convert ended (status {proc.returncode}) before the test could act: {out}{err}")
        assert time.monotonic() < deadline, "convert never got that far"
        time.sleep(0.02)


def partial_of(proc: subprocess.Popen, out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{proc.pid}"


def only_data_left(store: Path) -> bool:
    """hdmf-zarr has cached the spec, its last step, and data is being stored while the root is
    still the placeholder that marks the store incomplete: from now on the main thread only
    waits for the data."""
    try:
        root = json.loads((store / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    incomplete = any(isinstance(v, dict) and v.get("must_understand") for v in root.values())
    spec_cached = (store / "specifications" / "core").is_dir()
    return incomplete and spec_cached and (store / "acquisition" / "ElectricalSeries" / "data" / "c").exists()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("sig", "status", "word"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_an_interrupted_convert_leaves_nothing(recording, tmp_path, sig, status, word):
    """The signal comes once hdmf-zarr has written everything but the data, while the main thread
    waits for the writer (the dispatcher thread, with the serial engine): Ctrl-C used to remove the partial store while chunks were still being
    stored into it, and SIGTERM killed the process with the partial store left behind."""
    out = tmp_path / "out.nwb.zarr"
    proc = start(recording, out, *SLOW)
    try:
        partial = partial_of(proc, out)
        wait_until(proc, lambda: only_data_left(partial))
        time.sleep(0.5)
        assert proc.poll() is None, "convert finished before the signal"
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, stdout + stderr
    assert stderr.strip() == f"hdmf-zarr-parallel: {word}"
    time.sleep(0.5)  # a chunk still being stored would show up now
    assert listing(tmp_path) == []  # no output, no partial store, no lock file


def test_a_killed_convert_is_cleaned_up_by_the_next_one(recording, tmp_path):
    out = tmp_path / "out.nwb.zarr"
    proc = start(recording, out, *SLOW)
    try:
        partial = partial_of(proc, out)
        wait_until(proc, lambda: (partial / "acquisition" / "ElectricalSeries" / "data" / "c").exists())
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert partial.is_dir()  # nothing can clean up after SIGKILL ...
    again = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel", "convert", str(recording), str(out), "--engine", "threads"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    # ... but the next convert to the same output does, and says so
    assert f"removed {partial.name}, the partial output of a convert (process {proc.pid}) that was killed" in (
        again.stdout
    )
    assert listing(tmp_path) == ["out.nwb.zarr"]


def test_a_second_convert_to_the_same_output_fails_at_once(recording, tmp_path):
    out = tmp_path / "out.nwb.zarr"
    first = start(recording, out, *SLOW)
    try:
        wait_until(first, lambda: partial_of(first, out).exists())
        second = subprocess.run(
            [sys.executable, "-m", "hdmf_zarr_parallel", "convert", str(recording), str(out), "--overwrite"],
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        assert first.poll() is None, "the first convert ended before the second one was checked"
        stdout, stderr = first.communicate(timeout=240)
    finally:
        first.kill()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip() == (
        f"hdmf-zarr-parallel: convert: another convert (process {first.pid}) is writing {out} "
        f"(it holds .{out.name}.lock); wait for it to finish, or choose another output"
    )
    assert first.returncode == 0, stdout + stderr
    assert listing(tmp_path) == ["out.nwb.zarr"]
    from hdmf_zarr_parallel.tools.verify import compare_nwb_files

    assert compare_nwb_files(recording, out) == []
