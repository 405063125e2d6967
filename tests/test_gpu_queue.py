"""The GPU engine's one queue, on the host: lanes (``HostLane``) and CPU workers share the tasks,
each dataset routed by its chain and its frame size, every unit stored once, every store read
back bit-exactly."""

import collections
import os
import re
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from conftest import BlockIterator, FailingNumpyIterator, NumpyIterator, realistic
from ctrl_c import interrupt
from hdmf_zarr_parallel import ChunkWriteError
from hdmf_zarr_parallel.gpu import routing
from hdmf_zarr_parallel.gpu.engine import GpuEngine
from hdmf_zarr_parallel.gpu.lanes import HostLane
from hdmf_zarr_parallel.gpu.plan import classify
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets
from hdmf_zarr_parallel.write.sink import LocalFileSink
from hdmf_zarr_parallel.write.target import DatasetTarget
from readers import assert_independent_readers_match


class Lane(HostLane):
    """A host lane that counts the chunks it encodes, optionally slowly, optionally failing."""

    delay = 0.0
    fail_after: int | None = None
    encoded = 0
    lock = threading.Lock()

    def encode(self, plan, rows, indices):
        time.sleep(self.delay)
        with Lane.lock:
            if Lane.fail_after is not None and Lane.encoded >= Lane.fail_after:
                raise RuntimeError("the GPU fell off the bus")
            Lane.encoded += len(indices)
        return super().encode(plan, rows, indices)


@pytest.fixture(autouse=True)
def reset_lane():
    Lane.delay, Lane.fail_after, Lane.encoded = 0.0, None, 0
    yield
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name.startswith("hzp-")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hzp-")]


@pytest.fixture
def puts(monkeypatch):
    """Every chunk or shard file stored, counted per (array directory, key)."""
    counts = collections.Counter()
    lock = threading.Lock()
    real = LocalFileSink.put_many

    def counting(self, items):
        items = list(items)
        real(self, items)
        with lock:
            counts.update((self._root, self.key(c)) for c, blob in items if blob is not None)

    monkeypatch.setattr(LocalFileSink, "put_many", counting)
    return counts


def slow_cpu(monkeypatch, seconds=0.02):
    """CPU workers encode with the array's zarr codecs (``encode_unit``, ``encode_block``: a block
    of whole units); lanes never call them. Each unit takes ``seconds`` longer."""
    for name in ("encode_unit", "encode_block"):
        real = getattr(DatasetTarget, name)

        def slow(self, coords, data, real=real, name=name):
            time.sleep(seconds * (len(coords) if name == "encode_block" else 1))
            return real(self, coords, data)

        monkeypatch.setattr(DatasetTarget, name, slow)


def gpu_write(pairs, cpu_helpers=2, batch_bytes=16 << 10, **engine_kwargs):
    engine = GpuEngine(2, batch_bytes, lanes=2, lane_factory=Lane, cpu_helpers=cpu_helpers, **engine_kwargs)
    options = WriteOptions(engine="gpu", max_workers=2)
    return write_datasets([DatasetWrite(a, i) for a, i in pairs], engine, options)


def unit_grid(array):
    """Units (chunks, or shards) per axis."""
    unit = array.shards or array.chunks
    return tuple(-(-s // u) for s, u in zip(array.shape, unit, strict=True))


def all_keys(array):
    return {array.metadata.encode_chunk_key(c) for c in np.ndindex(*unit_grid(array))}


def assert_each_unit_stored_once(puts, root, arrays):
    for name, array in arrays.items():
        stored = {key: n for (where, key), n in puts.items() if where == os.fspath(root / name)}
        assert set(stored) == all_keys(array), f"{name}: units lost or extra"
        assert set(stored.values()) == {1}, f"{name}: units stored twice: {[k for k, n in stored.items() if n > 1]}"


@pytest.mark.parametrize("slow", ["lanes", "cpu"])
@pytest.mark.parametrize("kind", ["region", "units"])
@pytest.mark.parametrize("shards", [None, (64, 16)])
def test_lanes_and_cpu_workers_share_the_queue_and_store_each_unit_once(
    tmp_path, monkeypatch, puts, subtests, slow, kind, shards
):
    if slow == "lanes":
        Lane.delay = 0.03
    else:
        slow_cpu(monkeypatch)
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path / "g.zarr"), mode="w")
    data = realistic((1201, 37), "int16")
    other = realistic((400, 10), "int16", seed=3)
    gpu = root.create_array("gpu", shape=data.shape, dtype=data.dtype, chunks=(16, 8), shards=shards)
    cpu = root.create_array(  # a chain the GPU cannot write: CPU workers take its tasks whole
        "cpu", shape=other.shape, dtype=other.dtype, chunks=(20, 10), compressors=BloscCodec(cname="blosclz")
    )

    def iterator(array):
        return (
            NumpyIterator(array, buffer_shape=(128, array.shape[1]))
            if kind == "region"
            else BlockIterator(array, (64, array.shape[1]))
        )

    report = gpu_write([(gpu, iterator(data)), (cpu, iterator(other))])
    for name, expected in (("gpu", data), ("cpu", other)):
        np.testing.assert_array_equal(zarr.open_array(root.store, path=name, mode="r")[...], expected)
        assert_independent_readers_match(tmp_path / "g.zarr" / name, expected, subtests, name=name)
    assert_each_unit_stored_once(puts, tmp_path / "g.zarr", {"gpu": gpu, "cpu": cpu})

    by_name = {d.name: d for d in report.per_dataset}
    assert by_name["gpu"].engine == "gpu: 2 lanes + 2 CPU workers"
    assert by_name["cpu"].engine == "gpu: 2 CPU workers"
    assert by_name["cpu"].reason.startswith("CPU workers instead of the GPU: codecs: blosc with cname 'blosclz'")
    units = int(np.prod(unit_grid(gpu)))
    lanes, cpu_units = map(
        int, re.fullmatch(r"units encoded: (\d+) by GPU lanes, (\d+) by CPU workers", by_name["gpu"].detail).groups()
    )
    assert lanes + cpu_units == units, by_name["gpu"].detail
    if slow == "lanes":
        assert cpu_units > 0, "slow lanes: the CPU workers took some of the GPU-routed units"
    assert lanes > 0, "the lanes took the oldest tasks"
    assert "units encoded" in report.summary()


def test_without_sharing_lanes_write_every_gpu_routed_unit(store, puts):
    Lane.delay = 0.02
    data = realistic((600, 16))
    array = zarr.create_array(store, shape=data.shape, dtype=data.dtype, chunks=(16, 16), compressors=ZstdCodec())
    report = gpu_write([(array, NumpyIterator(data, buffer_shape=(64, 16)))], cpu_helpers=0)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    (only,) = report.per_dataset
    assert only.engine == "gpu: 2 lanes" and only.detail.endswith(f"{Lane.encoded} by GPU lanes, 0 by CPU workers")
    assert Lane.encoded == 38


def test_a_failing_lane_stops_the_write_and_is_re_raised(store):
    Lane.fail_after = 20
    data = realistic((1200, 16))
    array = zarr.create_array(store, shape=data.shape, dtype=data.dtype, chunks=(16, 16), compressors=ZstdCodec())
    with pytest.raises(ChunkWriteError, match="encoding on the GPU.*fell off the bus"):
        gpu_write([(array, NumpyIterator(data, buffer_shape=(64, 16)))], cpu_helpers=0)


@pytest.mark.parametrize("routed", ["cpu", "shared"])
def test_a_failing_cpu_worker_stops_the_write_and_is_re_raised(tmp_path, monkeypatch, routed):
    Lane.delay = 0.05  # the CPU workers get to the shared rows first
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path / "g.zarr"), mode="w")
    data = realistic((1200, 16))
    if routed == "cpu":
        array = root.create_array(
            "a", shape=data.shape, dtype=data.dtype, chunks=(16, 16), compressors=BloscCodec(cname="blosclz")
        )
        iterator = FailingNumpyIterator(data, fail_at_row=900, buffer_shape=(64, 16))
    else:
        array = root.create_array("a", shape=data.shape, dtype=data.dtype, chunks=(16, 16))
        iterator = NumpyIterator(data, buffer_shape=(64, 16))

        def broken(self, coords, data):  # what encode_unit / encode_block raise when the zarr codec fails
            first = coords[0] if isinstance(coords, list) else coords
            raise ChunkWriteError(self.name, first, "encoding", "OSError('codec on fire')")

        monkeypatch.setattr(DatasetTarget, "encode_unit", broken)
        monkeypatch.setattr(DatasetTarget, "encode_block", broken)
    with pytest.raises(ChunkWriteError, match="disk on fire|codec on fire"):
        gpu_write([(array, iterator)])


CTRL_C_WRITER = """
import json, sys, threading, time
import numpy as np, zarr
sys.path.insert(0, sys.argv[1])
from conftest import NumpyIterator
from hdmf_zarr_parallel.gpu.engine import GpuEngine
from hdmf_zarr_parallel.gpu.lanes import HostLane
from hdmf_zarr_parallel.options import WriteOptions
from hdmf_zarr_parallel.write.dataset import DatasetWrite
from hdmf_zarr_parallel.write.pipeline import write_datasets


class Hangs(NumpyIterator):
    def _get_data(self, selection):
        if selection[0].start >= 2000:
            print("stuck", flush=True)
            time.sleep(3600)
        return super()._get_data(selection)


data = np.arange(4000 * 8, dtype="int16").reshape(4000, 8)
array = zarr.create_array(zarr.storage.LocalStore(sys.argv[2]), shape=data.shape, dtype=data.dtype, chunks=(100, 8))
engine = GpuEngine(2, 8 << 10, lanes=2, lane_factory=HostLane, cpu_helpers=int(sys.argv[3]))
try:
    write_datasets([DatasetWrite(array, Hangs(data, buffer_shape=(500, 8)))], engine, WriteOptions(engine="gpu"))
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
left = [t.name for t in threading.enumerate() if t.name.startswith("hzp-") and not t.daemon]
print(json.dumps({"outcome": outcome, "caught_at": time.time(), "non_daemon": left}), flush=True)
"""


@pytest.mark.parametrize("cpu_helpers", [0, 2])
def test_ctrl_c_ends_a_gpu_write_stuck_in_a_read_and_the_process_exits(tmp_path, cpu_helpers):

    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(CTRL_C_WRITER))
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    ended = interrupt(
        [sys.executable, str(script), tests, str(tmp_path / "a.zarr"), str(cpu_helpers)],
        ready="stuck",
        after=0.3,
        env=env,
        timeout=30,
    )
    report = ended.report
    assert report["outcome"] == "interrupted"
    assert report["caught_at"] - ended.signalled < 3
    assert ended.to_exit < 6, f"{ended.to_exit:.1f} s from Ctrl-C to the end of the process"
    assert report["non_daemon"] == []


# -- routing by layout ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, chunks, shards, compressors, on_gpu, reason",
    [
        (
            "zstd-1MiB",
            (8192, 64),
            None,
            ZstdCodec(level=3),
            False,
            "CPU workers instead of the GPU: 1.0 MiB chunks are one nvCOMP frame each; "
            "the GPU is not faster than the CPU above 512 KiB frames",
        ),
        (
            "zstd-64KiB-in-shards",
            (512, 64),
            (4096, 64),
            ZstdCodec(level=3),
            True,
            "64 KiB inner chunks are one nvCOMP frame each; frames up to 512 KiB stay on the GPU",
        ),
        (
            "blosc-zstd-4MiB",
            (32768, 64),
            None,
            BloscCodec(cname="zstd", clevel=3),
            True,
            "128 KiB Blosc streams are one nvCOMP frame each; frames up to 512 KiB stay on the GPU",
        ),
    ],
)
def test_datasets_are_routed_by_frame_size_with_the_reason_in_the_report(
    tmp_path, subtests, name, chunks, shards, compressors, on_gpu, reason
):
    data = realistic((32768, 64), "int16")  # 4 MiB
    path = tmp_path / f"{name}.zarr"
    array = zarr.create_array(
        zarr.storage.LocalStore(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
    )
    report = gpu_write([(array, NumpyIterator(data, buffer_shape=(4096, 64)))], cpu_helpers=0, batch_bytes=8 << 20)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], data)
    assert_independent_readers_match(path, data, subtests)
    (only,) = report.per_dataset
    assert only.reason == reason
    assert (Lane.encoded > 0) == on_gpu
    assert only.engine.startswith("gpu: 2 lanes" if on_gpu else f"gpu: {routing.cpu_worker_count(0, 2)[0]} CPU worker")
    assert reason in report.summary()


def test_frame_sizes_and_the_threshold():
    store = zarr.storage.MemoryStore()
    unsharded = classify(zarr.create_array(store, name="a", shape=(10,), dtype="int16", chunks=(262144,)))
    assert routing.frame_nbytes(unsharded) == 512 << 10
    assert routing.layout_route(unsharded)[0], "exactly the threshold stays on the GPU"
    assert not routing.layout_route(unsharded, max_frame_bytes=256 << 10)[0]
    sharded = classify(zarr.create_array(store, name="b", shape=(10,), dtype="int16", chunks=(1024,), shards=(8192,)))
    assert routing.frame_nbytes(sharded) == 2048
    blosc = classify(
        zarr.create_array(
            store, name="c", shape=(10,), dtype="int64", chunks=(1 << 20,), compressors=BloscCodec(cname="lz4")
        )
    )
    assert routing.frame_nbytes(blosc) <= 128 << 10, "8 MiB Blosc chunks are small streams"
    assert [routing.format_bytes(n) for n in (100, 65536, 1 << 20)] == ["100 B", "64 KiB", "1.0 MiB"]


def test_the_cpu_worker_count(monkeypatch):
    monkeypatch.setattr(routing, "default_workers", lambda: 16)
    assert routing.cpu_worker_count(None, 4) == (12, True)
    assert routing.cpu_worker_count(0, 4) == (12, False)
    assert routing.cpu_worker_count(3, 4) == (3, True)
    monkeypatch.setattr(routing, "default_workers", lambda: 2)
    assert routing.cpu_worker_count(None, 4) == (1, True), "at least one CPU worker"


def test_gpu_cpu_helpers_is_none_zero_or_a_positive_int():
    assert WriteOptions().gpu_cpu_helpers is None
    assert WriteOptions(gpu_cpu_helpers=0).gpu_cpu_helpers == 0
    assert WriteOptions(gpu_cpu_helpers=np.int64(5)).gpu_cpu_helpers == 5
    with pytest.raises(ValueError, match="gpu_cpu_helpers must be >= 0"):
        WriteOptions(gpu_cpu_helpers=-2)
    for bad in ("4", True, 2.0):
        with pytest.raises(TypeError, match="gpu_cpu_helpers must be an int"):
            WriteOptions(gpu_cpu_helpers=bad)


def test_auto_says_gpu_lanes_and_cpu_workers_share_one_queue(monkeypatch):
    from hdmf_zarr_parallel.engines.registry import choose_auto_engine
    from hdmf_zarr_parallel.gpu import status

    device = SimpleNamespace(available=True, device_name="Fake H200", nvcomp_version="6.0", reason="")
    monkeypatch.setattr(status, "gpu_status", lambda: device)
    monkeypatch.setattr(routing, "default_workers", lambda: 16)
    name, reason = choose_auto_engine()
    assert name == "gpu"
    assert reason == (
        "GPU engine: Fake H200 with nvCOMP 6.0; 4 GPU lanes and 12 CPU workers on one queue, "
        "datasets routed by chain and layout"
    )
