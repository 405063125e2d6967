"""A store is recognisably incomplete until its write has stored everything.

While a write runs, after it failed, after Ctrl-C and after SIGKILL, stock zarr-python,
hdmf-zarr and PyNWB refuse to open the store, and so do our own IO classes, each saying
that the store is incomplete. A completed write stores the same documents as before.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import zarr
from hdmf_zarr import ZarrIO
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import NWBHDF5IO, TimeSeries, get_manager
from pynwb.testing.mock.file import mock_NWBFile

from conftest import FailingNumpyIterator, NumpyIterator, realistic
from hdmf_zarr_parallel import ChunkWriteError, IncompleteStoreError, NWBParallelZarrIO, ParallelZarrIO


def nwbfile_with(**series):
    nwbfile = mock_NWBFile()
    for name, data in series.items():
        nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="V", rate=30_000.0))
    return nwbfile


READERS = {
    "zarr-python": lambda path: zarr.open_group(str(path), mode="r"),
    "hdmf-zarr ZarrIO": lambda path: ZarrIO(str(path), mode="r", manager=get_manager()).read(),
    "PyNWB NWBZarrIO": lambda path: NWBZarrIO(str(path), mode="r").read().acquisition,
    "NWBZarrIO.read_nwb": lambda path: NWBZarrIO.read_nwb(str(path)).acquisition,
    "ParallelZarrIO": lambda path: ParallelZarrIO(str(path), mode="r", manager=get_manager()).read(),
    "NWBParallelZarrIO": lambda path: NWBParallelZarrIO(str(path), mode="r").read().acquisition,
}


def what_readers_say(path) -> dict[str, str | None]:
    """Each reader's error message, or None where it opened the store."""
    said = {}
    for name, read in READERS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read(path)
        except Exception as exc:  # noqa: BLE001 - every refusal counts; its message is checked
            said[name] = f"{type(exc).__name__}: {exc}"
        else:
            said[name] = None
    return said


def assert_refused_as_incomplete(path):
    said = what_readers_say(path)
    opened = [name for name, message in said.items() if message is None]
    assert not opened, f"{opened} opened the incomplete store {path}"
    for name, message in said.items():
        assert "incomplete" in message, (name, message)
    for ours in ("ParallelZarrIO", "NWBParallelZarrIO"):
        assert said[ours].startswith("IncompleteStoreError"), said[ours]
        assert "failed, was interrupted or is still running" in said[ours]


def assert_reads_back(path, name, data):
    assert what_readers_say(path) == dict.fromkeys(READERS)
    with NWBZarrIO(str(path), mode="r") as io:
        np.testing.assert_array_equal(io.read().acquisition[name].data[:], data)


class FailsAfterTheSpecCache(NumpyIterator):
    """Reads its last region only once hdmf-zarr has cached the spec (its whole tail is written),
    then fails there, as a disk would; gives up waiting after 20 s."""

    def __init__(self, array, spec_dir, **kwargs):
        self.spec_dir = spec_dir
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        if selection[0].stop == self.array.shape[0]:
            deadline = time.monotonic() + 20
            while not (self.spec_dir / "zarr.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise OSError("disk on fire")
        return super()._get_data(selection)


def test_a_write_that_failed_after_hdmf_zarrs_tail_leaves_a_store_every_reader_refuses(tmp_path):
    data = realistic((6000, 4), seed=7)
    path = tmp_path / "f.nwb.zarr"
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_workers=2) as io:
        with pytest.raises(ChunkWriteError, match="disk on fire"):
            io.write(nwbfile_with(x=FailsAfterTheSpecCache(data, path / "specifications", buffer_shape=(1000, 4))))
    assert (path / "specifications" / "zarr.json").exists()  # hdmf-zarr's tail was written meanwhile
    assert_refused_as_incomplete(path)


def test_a_failed_write_with_exhaust_dci_leaves_a_store_every_reader_refuses(tmp_path):
    good, bad = realistic((3000, 4), seed=1), realistic((3000, 4), seed=2)
    path = tmp_path / "e.nwb.zarr"
    nwbfile = nwbfile_with(
        a=NumpyIterator(good, buffer_shape=(500, 4)),
        b=FailingNumpyIterator(bad, fail_at_row=2500, buffer_shape=(500, 4)),
    )
    with NWBParallelZarrIO(str(path), mode="w", engine="threads") as io:
        with pytest.raises(ChunkWriteError, match="disk on fire"):
            io.write(nwbfile, exhaust_dci=True)
    assert_refused_as_incomplete(path)


def test_a_failed_export_leaves_a_store_every_reader_refuses(tmp_path):
    h5 = tmp_path / "in.nwb"
    with NWBHDF5IO(str(h5), mode="w") as io:
        io.write(nwbfile_with(small=realistic((300, 2))))
    path = tmp_path / "out.nwb.zarr"
    data = realistic((6000, 4), seed=3)
    with NWBHDF5IO(str(h5), mode="r") as src, NWBParallelZarrIO(str(path), mode="w", engine="threads") as dst:
        nwbfile = src.read()
        iterator = FailsAfterTheSpecCache(data, path / "specifications", buffer_shape=(1000, 4))
        nwbfile.add_acquisition(TimeSeries(name="x", data=iterator, unit="V", rate=1.0))
        with pytest.raises(ChunkWriteError, match="disk on fire"):
            dst.export(src_io=src, nwbfile=nwbfile, write_args={"link_data": False})
    assert (path / "specifications" / "zarr.json").exists()
    assert_refused_as_incomplete(path)


def test_a_failure_in_hdmf_zarr_itself_leaves_a_store_every_reader_refuses(tmp_path, monkeypatch):
    real_write_attributes = ZarrIO.write_attributes

    def write_attributes(self, *args, **kwargs):
        obj = args[0] if args else kwargs.get("obj")
        if getattr(obj, "path", "") == "":  # the root's attributes, after every dataset was queued
            raise RuntimeError("attribute writing broke")
        return real_write_attributes(self, *args, **kwargs)

    monkeypatch.setattr(ZarrIO, "write_attributes", write_attributes)
    path = tmp_path / "h.nwb.zarr"
    with NWBParallelZarrIO(str(path), mode="w", engine="threads") as io:
        with pytest.raises(RuntimeError, match="attribute writing broke"):
            io.write(nwbfile_with(x=NumpyIterator(realistic((20_000, 4)), buffer_shape=(1000, 4))))
    monkeypatch.undo()
    assert_refused_as_incomplete(path)


class ReadsTheStoreBeforeItsLastRegion(NumpyIterator):
    """Before its last region (once hdmf-zarr's tail is written) asks every reader what the
    store being written looks like."""

    def __init__(self, array, path, **kwargs):
        self.path, self.said = path, None
        super().__init__(array, **kwargs)

    def _get_data(self, selection):
        if selection[0].stop == self.array.shape[0]:
            deadline = time.monotonic() + 20
            while not (self.path / "specifications" / "zarr.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # and hdmf-zarr's last consolidation, which follows the spec cache
            self.said = what_readers_say(self.path)
        return super()._get_data(selection)


@pytest.mark.parametrize("kind", ["write", "export"])
def test_a_store_is_refused_while_its_write_is_running_and_reads_once_it_returned(tmp_path, kind):
    data = realistic((6000, 4), seed=5)
    path = tmp_path / "r.nwb.zarr"
    iterator = ReadsTheStoreBeforeItsLastRegion(data, path, buffer_shape=(1000, 4))
    with NWBParallelZarrIO(str(path), mode="w", engine="threads", max_workers=2) as io:
        if kind == "write":
            io.write(nwbfile_with(x=iterator))
        else:
            h5 = tmp_path / "in.nwb"
            with NWBHDF5IO(str(h5), mode="w") as h5io:
                h5io.write(nwbfile_with(small=realistic((300, 2))))
            with NWBHDF5IO(str(h5), mode="r") as src:
                nwbfile = src.read()
                nwbfile.add_acquisition(TimeSeries(name="x", data=iterator, unit="V", rate=1.0))
                io.export(src_io=src, nwbfile=nwbfile, write_args={"link_data": False})
    opened = [name for name, message in iterator.said.items() if message is None]
    assert not opened, f"{opened} opened the store while its data was still being written"
    assert all("incomplete" in message for message in iterator.said.values()), iterator.said
    assert_reads_back(path, "x", data)
    assert zarr.open_group(str(path), mode="r").metadata.consolidated_metadata is not None


WRITER = """
import sys, time
import numpy as np
from hdmf.data_utils import GenericDataChunkIterator
from hdmf_zarr_parallel import NWBParallelZarrIO
from pynwb import TimeSeries
from pynwb.testing.mock.file import mock_NWBFile


class Slow(GenericDataChunkIterator):
    concurrent_reads = True

    def __init__(self, **kwargs):
        self.array = np.arange(200_000 * 8, dtype=np.int16).reshape(200_000, 8)
        super().__init__(**kwargs)

    def _get_data(self, selection):
        time.sleep(0.05)
        return self.array[selection]

    def _get_maxshape(self):
        return self.array.shape

    def _get_dtype(self):
        return self.array.dtype


nwbfile = mock_NWBFile()
data = Slow(buffer_shape=(1000, 8), chunk_shape=(1000, 8))  # 200 slow buffers: >= 5 s on 2 workers
nwbfile.add_acquisition(TimeSeries(name="x", data=data, unit="V", rate=1.0))
print("writing", flush=True)
try:
    with NWBParallelZarrIO(sys.argv[1], mode="w", engine="threads", max_workers=2) as io:
        io.write(nwbfile)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_or_interrupted_write_leaves_a_store_every_reader_refuses(tmp_path, sig):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    path = tmp_path / "k.nwb.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while not (path / "specifications" / "zarr.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the write ended before it could be stopped"
        time.sleep(0.5)  # hdmf-zarr's tail is written; the data is not
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 0 and stdout.split()[-1] == "interrupted", stderr
    chunks = list((path / "acquisition" / "x" / "data").rglob("c/*/*"))
    assert 0 < len(chunks) < 200
    assert_refused_as_incomplete(path)


def read_documents(root):
    """Every metadata document of a store, object ids masked (each write draws its own)."""
    import re

    uuid = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    return {str(p.relative_to(root)): uuid.sub(b"UUID", p.read_bytes()) for p in sorted(root.rglob("zarr.json"))}


@pytest.mark.parametrize("exhaust_dci", [False, True])
def test_a_completed_write_stores_what_stock_stores(tmp_path, exhaust_dci):
    data = realistic((3000, 4), seed=9)

    def nwbfile():
        return nwbfile_with(x=NumpyIterator(data, buffer_shape=(500, 4)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBZarrIO(str(tmp_path / "stock.nwb.zarr"), mode="w") as io:
            io.write(nwbfile())
        with NWBParallelZarrIO(str(tmp_path / "ours.nwb.zarr"), mode="w", engine="threads") as io:
            io.write(nwbfile(), exhaust_dci=exhaust_dci)
    stock = read_documents(tmp_path / "stock.nwb.zarr")
    ours = read_documents(tmp_path / "ours.nwb.zarr")
    assert b"incomplete" not in ours["zarr.json"]
    assert ours == stock
    assert_reads_back(tmp_path / "ours.nwb.zarr", "x", data)


def test_a_completed_export_stores_what_stock_stores(tmp_path):
    h5 = tmp_path / "in.nwb"
    with NWBHDF5IO(str(h5), mode="w") as io:
        io.write(nwbfile_with(x=realistic((3000, 4))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for io_class, name in [(NWBZarrIO, "stock"), (NWBParallelZarrIO, "ours")]:
            with NWBHDF5IO(str(h5), mode="r") as src, io_class(str(tmp_path / f"{name}.nwb.zarr"), mode="w") as dst:
                dst.export(src_io=src, write_args={"link_data": False})
    assert read_documents(tmp_path / "ours.nwb.zarr") == read_documents(tmp_path / "stock.nwb.zarr")
    assert_reads_back(tmp_path / "ours.nwb.zarr", "x", realistic((3000, 4)))


def test_our_reader_names_the_incomplete_store_and_a_new_write_replaces_it(tmp_path):
    path = tmp_path / "p.nwb.zarr"
    data = realistic((2000, 2))
    with NWBParallelZarrIO(str(path), mode="w", engine="threads") as io:
        with pytest.raises(ChunkWriteError):
            io.write(nwbfile_with(x=FailingNumpyIterator(data, fail_at_row=0, buffer_shape=(500, 2))))
    with pytest.raises(IncompleteStoreError, match=r"p\.nwb\.zarr' is incomplete: its write failed") as info:
        NWBParallelZarrIO(str(path), mode="r")
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(IncompleteStoreError):  # nor is it appended to
        NWBParallelZarrIO(str(path), mode="a")
    document = json.loads((path / "zarr.json").read_text())  # the Zarr v3 way to say "do not read this"
    assert any(value.get("must_understand") is True for value in document.values() if isinstance(value, dict))
    with NWBParallelZarrIO(str(path), mode="w", engine="threads") as io:  # written again, as the error says
        io.write(nwbfile_with(x=NumpyIterator(data, buffer_shape=(500, 2))))
    assert_reads_back(path, "x", data)
