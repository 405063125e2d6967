"""Attributes stored with one metadata write per object: the same documents as stock, far fewer writes."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from hdmf_zarr.nwb import NWBZarrIO

from hdmf_zarr_parallel import NWBParallelZarrIO
from hdmf_zarr_parallel.metadata.attributes import AttributeRecorder, recording, store_recorded
from hdmf_zarr_parallel.tools.examples import build_example_nwbfile

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def metadata_documents(root: Path) -> dict[str, bytes]:
    """Every zarr.json of a store, object ids masked (each file draws its own)."""
    return {str(p.relative_to(root)): UUID.sub(b"UUID", p.read_bytes()) for p in root.rglob("zarr.json")}


def test_metadata_documents_match_stock_with_fewer_writes(tmp_path, monkeypatch):
    writes = {"count": 0}
    original = zarr.storage.LocalStore.set

    async def counting_set(self, key, value):
        writes["count"] += key.endswith("zarr.json")
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", counting_set)
    stock, ours = tmp_path / "stock.nwb.zarr", tmp_path / "ours.nwb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBZarrIO(str(stock), mode="w") as io:
            io.write(build_example_nwbfile())
        stock_writes, writes["count"] = writes["count"], 0
        with NWBParallelZarrIO(str(ours), mode="w") as io:
            io.write(build_example_nwbfile())
    documents = metadata_documents(stock)
    assert len(documents) > 50
    assert metadata_documents(ours) == documents
    assert writes["count"] < 0.7 * stock_writes, (writes["count"], stock_writes)  # 165 against 286


def test_the_recorder_refuses_what_zarr_refuses_and_writes_nothing(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    recorder = AttributeRecorder(group)
    recorder["n"] = 3
    with pytest.raises(TypeError):
        recorder["bad"] = object()  # JSON cannot hold it: hdmf-zarr catches this and converts
    assert recorder.values == {"n": 3}
    assert dict(zarr.open_group(tmp_path / "g.zarr").attrs) == {}


def test_recorded_values_are_stored_at_once_and_seen_by_the_handle(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=(4,), dtype="int16")
    stand_in = recording(array)
    stand_in.attrs["unit"] = "volts"
    stand_in.attrs["conversion"] = float(np.float32(0.5))
    stand_in.attrs["unit"] = "mV"  # set twice: the last value wins, in the first position
    store_recorded(array, stand_in)
    assert dict(array.attrs) == {"unit": "mV", "conversion": 0.5}
    assert list(zarr.open_array(tmp_path / "a.zarr").attrs) == ["unit", "conversion"]
