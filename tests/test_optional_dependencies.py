"""A core install is lean: the library, the CPU write path, ``convert`` and ``info`` run without
the extras, the library never imports its applications (``hdmf_zarr_parallel.tools``), and
``bench`` without matplotlib says which extra to install.

Each check runs in a fresh interpreter where importing matplotlib fails, as it does where the
``[bench]`` extra is not installed (a meta-path finder refuses it, whether or not it is here).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_MATPLOTLIB = """
import sys

class RefuseMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, RefuseMatplotlib())
"""


def run_without_matplotlib(code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = WITHOUT_MATPLOTLIB + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def test_the_library_convert_and_info_work_without_matplotlib(tmp_path):
    result = run_without_matplotlib(
        """
        import numpy as np
        from hdmf.common import DynamicTable, VectorData
        from hdmf.common import get_manager
        from hdmf.data_utils import DataChunkIterator

        from hdmf_zarr_parallel import ParallelZarrIO

        data = np.arange(40_000, dtype="int32")
        column = VectorData(name="x", description="x", data=DataChunkIterator(data=data, buffer_size=5_000))
        table = DynamicTable(name="t", description="t", columns=[column], id=list(range(data.size)))
        with ParallelZarrIO("plain.zarr", mode="w", manager=get_manager(), engine="threads", max_workers=2) as io:
            io.write(table)
        with ParallelZarrIO("plain.zarr", mode="r", manager=get_manager()) as io:
            assert np.array_equal(io.read()["x"].data[:], data)
        tools = sorted(m for m in sys.modules if m.startswith("hdmf_zarr_parallel.tools"))
        assert not tools, f"the library imported its applications: {tools}"

        from hdmf_zarr_parallel.tools.cli import main
        from hdmf_zarr_parallel.tools.examples import write_example_hdf5

        write_example_hdf5("example.nwb", seconds=0.2, channels=8, frames=4, frame_side=16)
        assert main(["info"]) == 0
        assert main(["convert", "example.nwb", "example.nwb.zarr", "--engine", "threads", "--stream-min-mb", "0.01"]) == 0
        assert "matplotlib" not in sys.modules
        print("LEAN OK")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "LEAN OK" in result.stdout and "converted example.nwb -> example.nwb.zarr" in result.stdout


def test_bench_without_matplotlib_names_the_extra_before_any_work(tmp_path):
    workdir = tmp_path / "bench"
    result = run_without_matplotlib(
        f"""
        from hdmf_zarr_parallel.tools.cli import main

        sys.exit(main(["bench", "--quick", "--workdir", {str(workdir)!r}]))
        """,
        tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("hdmf-zarr-parallel: bench: ") and "matplotlib" in lines[0]
    assert "pip install 'hdmf-zarr-parallel[bench]'" in lines[0]
    assert not workdir.exists()  # nothing generated, nothing written


def test_the_extras_carry_the_optional_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {Requirement(r).name for r in requirements}

    extras = project["optional-dependencies"]
    assert {"matplotlib", "kvikio-cu13"}.isdisjoint(names(project["dependencies"]))
    assert {"h5py", "isal"} <= names(project["dependencies"])  # convert is core
    assert {"matplotlib", "py-spy"} <= names(extras["bench"])
    assert "kvikio-cu13" in names(extras["gpu-bench"]) and "kvikio-cu13" not in names(extras["gpu"])
    assert {"matplotlib", "tensorstore", "zarrs"} <= names(extras["test"])
    assert project["scripts"]["hdmf-zarr-parallel"] == "hdmf_zarr_parallel.tools.cli:main"


def test_python_dash_m_runs_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hdmf_zarr_parallel", "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("hdmf-zarr-parallel "), result.stderr
