"""The notebooks in notebooks/ run top to bottom on the CPU path (nbclient, an ipykernel in this Python)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = {  # text each notebook must print
    "quickstart.ipynb": ["every sample identical: PASS", "speed-up: "],
    "convert_recording.ipynb": [
        "this notebook converts with engine=",
        "verify: every group, dataset, attribute, reference and link matches",
        "differences beyond chunks/codecs: none",
        "identical to stock export, metadata included",
        "exists; pass --overwrite",
    ],
}


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit notebooks without outputs"
    )
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    seconds = time.perf_counter() - start
    text = "\n".join(
        out.get("text", "") if out.output_type == "stream" else str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    for expected in EXPECTED[name]:
        assert expected in text, (expected, text)
    assert not [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert seconds < 120, f"{name} took {seconds:.0f} s; keep notebooks small"
