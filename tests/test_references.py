"""Datasets of object references: one write instead of one chunk rewrite per element, same bytes as stock."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from hdmf_zarr.nwb import NWBZarrIO

from hdmf_zarr_parallel import NWBParallelZarrIO
from hdmf_zarr_parallel.metadata.references import collecting_group
from hdmf_zarr_parallel.tools.examples import build_nwbfile

GROUP_CHUNK = "general/extracellular_ephys/electrodes/group/c/0"


def chunk_files(root: Path) -> dict[str, bytes]:
    """Every chunk file of a store but the file's creation date (which differs between two files)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "/c/" in f"/{p.relative_to(root)}" and "file_create_date" not in str(p)
    }


@pytest.fixture
def count_writes(monkeypatch):
    """How often each key is written to a LocalStore."""
    counts: dict[str, int] = {}
    original = zarr.storage.LocalStore.set

    async def counting_set(self, key, value):
        counts[key] = counts.get(key, 0) + 1
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", counting_set)
    return counts


def test_reference_columns_are_written_once_with_the_bytes_stock_writes(tmp_path, count_writes):
    data = np.arange(500 * 64, dtype="int16").reshape(500, 64)
    stock, ours = tmp_path / "stock.nwb.zarr", tmp_path / "ours.nwb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBZarrIO(str(stock), mode="w") as io:
            io.write(build_nwbfile(data, 64))
        stock_writes = count_writes.pop(GROUP_CHUNK)
        with NWBParallelZarrIO(str(ours), mode="w") as io:
            io.write(build_nwbfile(data, 64))
    assert stock_writes == 64, "stock rewrites the chunk once per electrode"
    assert count_writes[GROUP_CHUNK] == 1
    assert chunk_files(ours) == chunk_files(stock)
    with NWBZarrIO(str(ours), mode="r") as io:
        groups = io.read().electrodes["group"][:]
        assert [g.name for g in groups] == ["shank0"] * 64


def test_collecting_array_replays_what_does_not_fill_it(tmp_path):
    group = collecting_group(zarr.open_group(tmp_path / "g.zarr", mode="w"))
    array = group.require_array("paths", shape=(4,), dtype=np.dtypes.StringDType())
    array[0] = "/a"
    array[-1] = "/d"  # counted from the end, as zarr does
    assert (array[...] == "").all(), "nothing stored before the flush"
    group.flush()
    assert list(zarr.open_array(tmp_path / "g.zarr" / "paths")[...]) == ["/a", "", "", "/d"]


def test_collecting_array_flushes_before_any_other_write(tmp_path):
    group = collecting_group(zarr.open_group(tmp_path / "g.zarr", mode="w"))
    array = group.require_array("paths", shape=(3,), dtype=np.dtypes.StringDType())
    array[2] = "/late"
    array[0:2] = np.array(["/x", "/y"], dtype=np.dtypes.StringDType())  # a slice: stored at once, after the element
    assert list(array[...]) == ["/x", "/y", "/late"]
    for i, path in enumerate(["/p", "/q", "/r"]):
        array[i] = path
    group.flush()
    assert list(zarr.open_array(tmp_path / "g.zarr" / "paths")[...]) == ["/p", "/q", "/r"]
