"""Ctrl-C during ``io.write()``, as in a notebook: the interrupt reaches the caller at once and
no writer thread, worker process or (with Dask) task is left running. Each case runs in its own
interpreter, so the signal cannot reach pytest."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

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
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(npy), str(tmp_path / "out.nwb.zarr"), engine],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(1.5)  # well into the data
        proc.send_signal(signal.SIGINT)
        signalled = time.perf_counter()
        stdout, stderr = proc.communicate(timeout=60)
        to_exit = time.perf_counter() - signalled
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert to_exit < 4, f"{to_exit:.1f} s from Ctrl-C to the end of the process"
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["outcome"] == "interrupted"
    assert report["seconds"] < 4  # Ctrl-C came at 1.5 s; the whole write would take >= 5 s
    assert report["writer_threads"] == []
    assert report["left_running"] == 0
