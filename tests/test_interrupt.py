"""Ctrl-C during ``io.write()``, as in a notebook: the interrupt reaches the caller at once and
no writer thread, worker process or (with Dask) task is left running. Each case runs in its own
interpreter, so the signal cannot reach pytest."""

import sys
import textwrap

import numpy as np
import pytest

from ctrl_c import interrupt

# A slow, picklable iterator (the processes engine pickles it by path), in a module the
# spawned worker processes can import too.
SLOW_ITERATOR = """
import time
from hdmf_zarr_parallel.tools.examples import NpyMemmapIterator


class SlowNpyIterator(NpyMemmapIterator):
    def _get_data(self, selection):
        time.sleep(0.05)
        return super()._get_data(selection)
"""

WRITER = """
import json, multiprocessing, sys, threading, time


def main(npy, out, engine):
    from slow_iterator import SlowNpyIterator
    from hdmf_zarr_parallel import NWBParallelZarrIO
    from hdmf_zarr_parallel.tools.bench_data import build_ephys_nwb

    client = None
    if engine == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    nwbfile = build_ephys_nwb(SlowNpyIterator(npy, chunk_shape=(1000, 32), buffer_shape=(1000, 32)))
    print("writing", flush=True)
    t0 = time.perf_counter()
    try:
        with NWBParallelZarrIO(out, mode="w", engine=engine, max_workers=2, client=client) as io:
            io.write(nwbfile)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    seconds = time.perf_counter() - t0
    report = {
        "outcome": outcome,
        "seconds": seconds,
        "writer_threads": [t.name for t in threading.enumerate() if t.name.startswith("hzp-")],
    }
    if client is None:  # worker processes still alive
        report["left_running"] = len(multiprocessing.active_children())
    else:  # Dask tasks still running on the cluster
        time.sleep(0.5)
        report["left_running"] = sum(len(tasks) for tasks in client.processing().values())
        client.close()
        cluster.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":  # the processes engine's workers import this file too
    sys.path.insert(0, sys.argv[1])
    main(*sys.argv[2:5])
"""


@pytest.mark.parametrize("engine", ["threads", "processes", "dask"])
def test_ctrl_c_during_a_write_stops_it_at_once(tmp_path, engine):
    npy = tmp_path / "ephys.npy"
    np.save(npy, np.arange(200_000 * 32, dtype=np.int16).reshape(200_000, 32))  # 200 slow buffers: >= 5 s
    (tmp_path / "slow_iterator.py").write_text(textwrap.dedent(SLOW_ITERATOR))
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    ended = interrupt(
        [sys.executable, str(script), str(tmp_path), str(npy), str(tmp_path / "out.nwb.zarr"), engine],
        ready="writing",
        after=1.5,  # well into the data
    )
    # the process ends soon after (a Dask LocalCluster's own shutdown takes a few seconds on a
    # loaded machine); a write that ignored Ctrl-C would report "finished", not "interrupted"
    limit = 15 if engine == "dask" else 8
    assert ended.to_exit < limit, f"{ended.to_exit:.1f} s from Ctrl-C to the end of the process"
    report = ended.report
    assert report["outcome"] == "interrupted"
    assert report["seconds"] < 4.5  # Ctrl-C came at 1.5 s; the whole write would take >= 5 s
    assert report["writer_threads"] == []
    assert report["left_running"] == 0


# Reads that never return (a dead network mount, a driver that hangs): the read of row 20_000
# on, or the 20_001st row of a sequential source, never comes back. Importable by the workers.
HANGING_SOURCES = """
import os
import time

import numpy as np
from hdmf_zarr_parallel.tools.examples import NpyMemmapIterator


def forever(marker):
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(3600)


class HangingNpyIterator(NpyMemmapIterator):
    def _get_data(self, selection):
        if selection[0].start >= 20_000:
            forever(self.path + ".stuck")
        return super()._get_data(selection)


def hanging_rows(path):
    array = np.load(path, mmap_mode="r")
    for i in range(array.shape[0]):
        if i == 20_000:
            forever(path + ".stuck")
        yield np.array(array[i])
"""

HANGING_WRITER = """
import json, multiprocessing, sys, threading, time


def main(npy, out, engine, kind):
    import numpy as np
    from hanging_sources import HangingNpyIterator, hanging_rows
    from hdmf.data_utils import DataChunkIterator
    from hdmf_zarr.utils import ZarrDataIO
    from hdmf_zarr_parallel import NWBParallelZarrIO
    from hdmf_zarr_parallel.tools.bench_data import build_ephys_nwb

    if kind == "random":
        iterator = HangingNpyIterator(npy, chunk_shape=(1000, 32), buffer_shape=(1000, 32))
    else:
        rows = DataChunkIterator(hanging_rows(npy), maxshape=(None, 32), dtype=np.dtype("int16"), buffer_size=1000)
        iterator = ZarrDataIO(rows, chunks=[1000, 32])  # zarr would chunk it as its first row: (1, 32)
    nwbfile = build_ephys_nwb(iterator)
    print("writing", flush=True)
    try:
        with NWBParallelZarrIO(out, mode="w", engine=engine, max_workers=2) as io:
            io.write(nwbfile)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    report = {
        "outcome": outcome,
        "caught_at": time.time(),
        "left_behind": [t.name for t in threading.enumerate() if t.name.startswith("hzp-")],
        "worker_processes": len(multiprocessing.active_children()),
    }
    print(json.dumps(report), flush=True)
    import faulthandler

    faulthandler.dump_traceback_later(10, exit=True)  # still here 10 s later: say where it hangs, and end


if __name__ == "__main__":  # the processes engine's workers import this file too
    sys.path.insert(0, sys.argv[1])
    main(*sys.argv[2:6])
"""


@pytest.mark.parametrize(
    ("engine", "kind"),
    [
        ("serial", "random"),
        ("threads", "random"),
        ("processes", "random"),
        ("serial", "sequential"),
        ("threads", "sequential"),
    ],
)
def test_ctrl_c_once_ends_a_write_stuck_in_a_read_and_the_process_exits(tmp_path, engine, kind):
    npy = tmp_path / "ephys.npy"
    np.save(npy, np.arange(100_000 * 32, dtype=np.int16).reshape(100_000, 32))
    (tmp_path / "hanging_sources.py").write_text(textwrap.dedent(HANGING_SOURCES))
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(HANGING_WRITER))
    ended = interrupt(
        [sys.executable, str(script), str(tmp_path), str(npy), str(tmp_path / "out.nwb.zarr"), engine, kind],
        ready="writing",
        after=0.3,
        stuck_marker=tmp_path / "ephys.npy.stuck",
        process_group=True,  # Ctrl-C once, in a terminal: to the writer and its worker processes
        timeout=30,
    )
    report = ended.report
    assert report["outcome"] == "interrupted"
    assert report["caught_at"] - ended.signalled < 3, "KeyboardInterrupt took too long to reach the caller"
    assert ended.to_exit < 6, f"{ended.to_exit:.1f} s from Ctrl-C to the end of the process"
    assert report["worker_processes"] == 0  # a worker stuck in a read was terminated
