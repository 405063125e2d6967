#!/usr/bin/env python
"""The GIL budget: seconds per GB that each thread role holds the GIL while writing.

No writer beats 1 GB / (seconds per GB its threads hold the GIL), on any core count. For each
configuration (layout x engine) a child process writes bench_write.py's realistic int16 ephys
recording as an NWB ``ElectricalSeries``, with ``py-spy record --gil --threads --subprocesses
--idle --nonblocking --format raw`` attached for the write only (after an untimed warm-up
write). py-spy keeps, per sample, the thread holding the GIL, named by the stack's root frame;
its samples come as a Poisson process of ``--rate`` per second, so GIL-held seconds of a
role = samples / rate (sd sqrt(samples) / rate), divided by the GB written (raw bytes).
``gpu-host`` is engine="gpu" on ``HostLane`` (no device), writing the bare zarr array.
Roles, columns, method and limits: benchmarks/README.md, "GIL budget".

    python benchmarks/bench_gil.py --self-test     # the method on known loads (~10 s)
    python benchmarks/bench_gil.py --quick         # 0.1 GB, every configuration (a few minutes)
    python benchmarks/bench_gil.py                 # 1 GB
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_write import NpyMemmapIterator, ephys_case, machine_facts, save_json

PY_SPY = Path(sys.executable).with_name("py-spy")
SPY_MODE: list[str] = ["--nonblocking"]  # [] with --blocking
REPO = Path(__file__).resolve().parent.parent
LAYOUTS = {  # name: (chunks, shards) of the (rows, 384 channels) int16 array
    "1MiB": ((8192, 64), None),
    "4MiB": ((32768, 64), None),
    "shard3MiB/64KiB": ((512, 64), (4096, 384)),
}
ENGINES = ("stock", "serial", "threads", "processes", "gpu-host", "dask")
DEFAULT = [(lay, eng) for lay in LAYOUTS for eng in ("serial", "threads", "processes", "gpu-host")]
DEFAULT.append(("1MiB", "stock"))
ROLES = ("hzp-*", "main", "zarr_io", "asyncio_*", "others", "child procs")
WORKER_ROLE = {"processes": "child procs", "dask": "child procs", "stock": "main"}  # else hzp-*
OWN_CODE = {"stock": "hdmf_zarr/"}  # whose frames the top-frames list names; else ours
OURS = "hdmf_zarr_parallel/"


# -- The child: one write between "ready" and "done" ---------------------------------------------------------------
def prepare_native() -> None:
    """numba's import and compilation (a once-per-process cost, like the imports) before the window,
    in checkouts that have the native block writer (``cpu/native.py``; without numba, nothing)."""
    try:
        from hdmf_zarr_parallel.cpu.native import prepare
    except ImportError:
        return
    prepare()


def host_lane_gpu_write(
    array, iterator, workers: int, tune_malloc: bool = True, lanes: int | None = None, cpu_helpers: int | None = None
) -> None:
    """engine="gpu" on the host lane (``lanes`` and ``cpu_helpers``: the engine's defaults where None): the
    only use of package internals (the imports of tests/test_gpu_engine_cpu.py). Repoint here when those
    modules move."""
    from hdmf_zarr_parallel import WriteOptions
    from hdmf_zarr_parallel.gpu.engine import GpuEngine
    from hdmf_zarr_parallel.gpu.lanes import HostLane
    from hdmf_zarr_parallel.write.dataset import DatasetWrite
    from hdmf_zarr_parallel.write.pipeline import write_datasets

    options = WriteOptions(engine="gpu", max_workers=workers, tune_malloc=tune_malloc)
    lanes = options.gpu_streams if lanes is None else lanes
    engine = GpuEngine(workers, options.gpu_batch_bytes, lanes=lanes, lane_factory=HostLane, cpu_helpers=cpu_helpers)
    write_datasets([DatasetWrite(array, iterator)], engine, options)


def prepare_write(cfg: dict, npy: str, out: Path, client=None) -> tuple[Callable[[], None], Path]:
    """Everything before the measured window; returns the write and where its array lands."""
    import zarr
    from hdmf_zarr.nwb import NWBZarrIO
    from hdmf_zarr.utils import ZarrDataIO

    from hdmf_zarr_parallel import NWBParallelZarrIO

    engine, workers, (chunks, shards) = cfg["engine"], cfg["workers"], LAYOUTS[cfg["layout"]]
    case = ephys_case(Path(npy), 0.0, cfg["buffer_mb"], 0, print)  # the file exists: this reads its shape
    unit = (shards or chunks)[0]
    rows = min(case.shape[0], max(unit, cfg["buffer_mb"] * 2**20 // (case.shape[1] * 2) // unit * unit))
    iterator = NpyMemmapIterator(npy, chunk_shape=chunks, buffer_shape=(rows, case.shape[1]))
    if engine == "gpu-host":
        store = zarr.storage.LocalStore(out)
        array = zarr.create_array(store, shape=case.shape, dtype="int16", chunks=chunks, shards=shards)
        lanes, helpers = cfg.get("lanes"), cfg.get("cpu_helpers")
        return (lambda: host_lane_gpu_write(array, iterator, workers, cfg["tune_malloc"], lanes, helpers)), out
    if cfg["layout"] == "1MiB":
        nwbfile = case.build(case.iterator())  # bench_write.py's ephys write, exactly
    else:
        nwbfile = case.build(ZarrDataIO(data=iterator, chunks=chunks, shards=shards))

    def write() -> None:
        if engine == "stock":
            with NWBZarrIO(str(out), mode="w") as io:
                io.write(nwbfile)
            return
        kwargs = {"client": client} if engine == "dask" else {"max_workers": workers}
        kwargs["tune_malloc"] = cfg["tune_malloc"]
        with NWBParallelZarrIO(str(out), mode="w", engine=engine, **kwargs) as io:
            io.write(nwbfile)

    return write, out / case.data_path


def check_written(array_path: Path, npy: str) -> dict:
    import zarr

    source, array = np.load(npy, mmap_mode="r"), zarr.open_array(array_path, mode="r")
    step = 65536
    exact = all(np.array_equal(array[r : r + step], source[r : r + step]) for r in range(0, len(source), step))
    stored = sum(p.stat().st_size for p in array_path.rglob("*") if p.is_file() and p.name != "zarr.json")
    return {"exact": exact, "stored_over_raw": stored / source.nbytes}


def record_thread_names() -> dict[int, str]:
    """{thread ident: name} of every thread started from now on (and those alive now): py-spy names
    the threads whose stacks it failed to read by ident only."""
    import threading

    names = {t.ident: t.name for t in threading.enumerate()}
    start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        start(self)
        names[self.ident] = self.name

    threading.Thread.start = recording_start
    return names


def child_main(cfg: dict) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    client = None
    if cfg["engine"] == "dask":
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=cfg["workers"], threads_per_worker=1, dashboard_address=None))
    workdir = Path(cfg["workdir"])
    warm, _ = prepare_write(cfg, cfg["warm_npy"], workdir / "warm.zarr", client)
    warm()  # imports, namespaces and caches are not part of the budget
    shutil.rmtree(workdir / "warm.zarr")
    prepare_native()
    write, array_path = prepare_write(cfg, cfg["npy"], workdir / "out.zarr", client)
    names = record_thread_names()
    print("@@ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    write()
    wall = time.perf_counter() - t0
    print("@@done " + json.dumps(names), flush=True)
    sys.stdin.readline()  # py-spy has stopped
    result = {"wall_s": wall, **(check_written(array_path, cfg["npy"]) if cfg["verify"] else {})}
    shutil.rmtree(workdir / "out.zarr", ignore_errors=True)
    if client is not None:
        client.cluster.close()
        client.close()
    print("@@result " + json.dumps(result), flush=True)


# -- The parent: py-spy attached for the write only, and its raw output parsed -------------------------------------
def _expect(child: subprocess.Popen, tag: str) -> str:
    for line in child.stdout:
        if line.startswith("@@" + tag):
            return line[len(tag) + 2 :].strip()
    raise RuntimeError(f"the child exited (rc {child.wait()}) before '{tag}'; see its stderr above")


def _say(child: subprocess.Popen, word: str = "go") -> None:
    child.stdin.write(word + "\n")
    child.stdin.flush()


def _start_spy(pid: int, raw: Path, rate: int, log) -> subprocess.Popen:
    args = ["record", "--pid", str(pid), "--gil", "--threads", "--subprocesses", "--idle", *SPY_MODE]
    spy = subprocess.Popen([str(PY_SPY), *args, "--format", "raw", "--rate", str(rate), "--output", str(raw)],
                           stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})  # fmt: skip
    deadline = time.monotonic() + 20
    while "Sampling process" not in Path(log.name).read_text():
        if spy.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"py-spy did not start: {Path(log.name).read_text()}")
        time.sleep(0.02)
    return spy


FAILED = re.compile(r"Failed to get stack trace from (\d+): Failed to call get_stack_trace for thread (\d+)")


def _spy_report(text: str, window: float, rate: int) -> dict:
    """py-spy's counts, its lag, and the samples whose stack it failed to read: (pid, thread ident) each.
    With --gil it reads only the GIL holder's stack, so each of those is a GIL-held sample too."""
    m = re.search(r"Samples: (\d+) Errors: (\d+)", text)
    lag = max([float(x) for x in re.findall(r"([\d.]+)s behind in sampling", text)], default=0.0)
    failed = [(int(pid), int(ident)) for pid, ident in FAILED.findall(text)]
    info = {"samples": int(m[1]) if m else None, "errors": int(m[2]) if m else 0, "window_s": window,
            "max_lag_s": lag, "failed_gil_samples": failed}  # fmt: skip
    if lag > 0.05 * window:
        print(f"[warn] py-spy fell {lag:.1f} s behind in {window:.1f} s: samples are missing; lower --rate")
    if info["errors"] - len(failed) > 0.02 * rate * window:
        print(f"[warn] {info['errors'] - len(failed)} py-spy errors that name no thread: GIL s undercounted")
    return info


def profiled_run(argv: list[str], raw: Path, rate: int) -> tuple[dict, dict, dict[int, str]]:
    """Run ``argv`` (a child that says @@ready, @@done {ident: thread name}, @@result {...}) with py-spy
    attached from ready to done; returns the result, py-spy's report and the thread names."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    spy = None
    try:
        _expect(child, "ready")
        with open(raw.with_suffix(".log"), "w") as log:  # a file: on a full pipe py-spy would block the child
            spy = _start_spy(child.pid, raw, rate, log)
            t0 = time.perf_counter()
            _say(child)
            names = {int(k): v for k, v in json.loads(_expect(child, "done") or "{}").items()}
            window = time.perf_counter() - t0
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        _say(child)
        result = json.loads(_expect(child, "result"))
        child.wait(timeout=120)
        return result, {**_spy_report(raw.with_suffix(".log").read_text(), window, rate), "pid": child.pid}, names
    finally:
        for process in (spy, child):
            if process is not None and process.poll() is None:
                process.kill()


THREAD = re.compile(r"(?:^|;)thread \((\w+)\)(?::\s*([^;]*))?(?=;|$)")  # the frame after the process frames
PROCESS = re.compile(r'(?:^|";)process \d+:"')  # a process frame: its quoted command line may hold ';'
FRAME = re.compile(r"^(.*) \((.*?):(\d+)\)$")
IMPORTING = "_find_and_load (<frozen importlib._bootstrap>"


def _role(in_child: bool, name: str | None) -> str:
    if in_child:
        return "child procs"
    name = name or ""
    if name.startswith("hzp-"):
        return "hzp-*"
    if name.startswith("asyncio_"):
        return "asyncio_*"
    return {"MainThread": "main", "zarr_io": "zarr_io"}.get(name, "others")


def _short(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m[2].split('site-packages/')[-1]}:{m[1]}:{m[3]}" if m else frame


@dataclass
class Profile:
    roles: collections.Counter = field(default_factory=collections.Counter)  # GIL-held samples per role
    unread: collections.Counter = field(default_factory=collections.Counter)  # of which py-spy read no stack
    names: collections.Counter = field(default_factory=collections.Counter)  # per thread name, "_N" dropped
    imports: collections.Counter = field(default_factory=collections.Counter)  # per role, inside an import
    own: collections.Counter = field(default_factory=collections.Counter)  # worker role, innermost own frame
    leaf: collections.Counter = field(default_factory=collections.Counter)  # worker role, leaf frame
    codec: int = 0  # worker role samples inside the stand-in codec call (gpu-host: the host lane's encode)


def host_lane_codec_lines() -> tuple[str, str, range]:
    """(function, file suffix, lines) of the host lane's stand-in for nvCOMP's one batched call
    (``HostLane._compress``: numcodecs per stream, or zstd in one GIL-free native call): what
    "excluding the codec" leaves out of the gpu-host figure."""
    import inspect

    from hdmf_zarr_parallel.gpu.lanes import HostLane

    lines, first = inspect.getsourcelines(HostLane._compress)
    assert any("reference.encode(" in text for text in lines), "the codec moved: update this"
    return "HostLane._compress", "hdmf_zarr_parallel/gpu/lanes.py", range(first, first + len(lines))


def _in_codec(frames: list[str], codec: tuple[str, str, range] | None) -> bool:
    if codec is None:
        return False
    for frame in frames:
        m = FRAME.match(frame)
        if m and m[1] == codec[0] and m[2].endswith(codec[1]) and int(m[3]) in codec[2]:
            return True
    return False


def parse_raw(
    path: Path,
    worker_role: str,
    own: str,
    spy: dict,
    names: dict[int, str],
    codec: tuple[str, str, range] | None = None,
) -> Profile:
    """Collapsed stacks ("process...;thread (TID): NAME;outer;...;leaf COUNT") into samples per role,
    and the worker role's samples by innermost ``own`` frame and by leaf frame; plus the GIL-held
    samples whose stack py-spy failed to read, by thread ident (``names``; other pids: child procs)."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        m = THREAD.search(stack)
        in_child = len(PROCESS.findall(stack[: m.start()] if m else stack)) > 1
        frames = [f for f in stack[m.end() :].split(";") if f] if m else []
        stacks.append((in_child, m[1] if m else "?", m[2] if m else None, frames, int(count)))
    named = {tid: name for _, tid, name, _, _ in stacks if name}  # a thread's first samples may lack its name
    prof = Profile()
    for in_child, tid, name, frames, n in stacks:
        name = name or named.get(tid)
        role = _role(in_child, name)
        prof.roles[role] += n
        prof.names[("child: " if in_child else "") + re.sub(r"[_-]\d+$", "", name or "(unnamed)")] += n
        importing = any(f.startswith(IMPORTING) for f in frames)
        prof.imports[role] += n if importing else 0
        if role == worker_role and frames:
            mine = [f for f in frames if own in f]
            where = "(importing modules)" if importing else _short(mine[-1]) if mine else "(none of ours on the stack)"
            prof.own[where] += n
            prof.leaf[_short(frames[-1])] += n
            prof.codec += n if _in_codec(frames, codec) else 0
    for pid, ident in spy["failed_gil_samples"]:
        name = names.get(ident)
        role = _role(pid != spy["pid"], name)
        prof.roles[role] += 1
        prof.unread[role] += 1
        prof.names[("child: " if pid != spy["pid"] else "") + re.sub(r"[_-]\d+$", "", name or "(unnamed)")] += 1
    return prof


# -- Configurations and the table ----------------------------------------------------------------------------------
def run_config(layout: str, engine: str, args: argparse.Namespace, data: dict, workdir: Path) -> dict:
    cfg = {"layout": layout, "engine": engine, "workers": args.workers, "buffer_mb": args.buffer_mb}
    cfg["tune_malloc"] = not args.no_tune_malloc
    cfg["lanes"], cfg["cpu_helpers"] = args.lanes, args.cpu_helpers
    cfg.update(verify=not args.no_verify, workdir=str(workdir), **data)
    raw = workdir / f"gil-{layout.replace('/', '_')}-{engine}.txt"
    cfg_file = raw.with_suffix(".json")
    cfg_file.write_text(json.dumps(cfg))  # a file: a ';' in argv would end up in py-spy's frames
    result, spy, names = profiled_run([sys.executable, __file__, "--child", str(cfg_file)], raw, args.rate)
    worker_role = WORKER_ROLE.get(engine, "hzp-*")
    codec = host_lane_codec_lines() if engine == "gpu-host" else None
    prof = parse_raw(raw, worker_role, OWN_CODE.get(engine, OURS), spy, names, codec)
    gb, rate = data["nbytes"] / 1e9, args.rate
    per_gb = {r: prof.roles[r] / rate / gb for r in ROLES}
    sd3 = {r: 3 * prof.roles[r] ** 0.5 / rate / gb for r in ROLES}  # a Poisson count n has sd sqrt(n)
    parent = sum(v for r, v in per_gb.items() if r != "child procs")
    row = {
        "layout": layout, "engine": engine, "gb": gb, **result, "py_spy": {k: v for k, v in spy.items() if k != "failed_gil_samples"}, "rate_hz": rate,
        "samples": dict(prof.roles), "samples_without_stack": dict(prof.unread), "gil_s_per_gb": per_gb, "gil_s_per_gb_3sd": sd3,
        "parent_gil_s_per_gb": parent, "main_gil_s_per_write": prof.roles["main"] / rate,
        "importing_gil_s": {r: n / rate for r, n in prof.imports.items() if n},
        "parent_gil_busy": parent * gb / result["wall_s"],
        "codec_samples": prof.codec if codec else None,
        "hzp_excl_codec_gil_s_per_gb": (prof.roles["hzp-*"] - prof.codec) / rate / gb if codec else None,
        "cap_hzp_gb_s": 1 / per_gb["hzp-*"] if prof.roles["hzp-*"] else None,
        "cap_process_gb_s": 1 / parent if parent else None,
        "threads": dict(prof.names.most_common()), "worker_role": worker_role,
        "top_own_frames": prof.own.most_common(args.top), "top_leaf_frames": prof.leaf.most_common(args.top),
    }  # fmt: skip
    roles = ", ".join(f"{r} {v:.3f}±{sd3[r]:.3f}" for r, v in per_gb.items() if v)
    if codec:
        roles += f" (hzp-* excluding the host lane's codec: {row['hzp_excl_codec_gil_s_per_gb']:.3f})"
    print(f"[{layout} {engine}] wall {result['wall_s']:.2f} s; GIL s/GB (±3 sd) {roles}; exact: "
          f"{result.get('exact', 'not checked')}; py-spy {spy['samples']} stacks + {sum(prof.unread.values())} "
          f"unread, {spy['errors']} errors")  # fmt: skip
    print(f"   top frames of the worker role ({worker_role}), GIL-held samples at {rate} Hz:")
    for frame, n in row["top_own_frames"]:
        print(f"   {n:6d}  {n / rate:6.2f} s  {frame}")
    return row


def fmt_table(rows: list[dict]) -> str:
    def g(v: float | None, f: str = ".3f") -> str:
        return format(v, f) if v else "-"

    head = ["layout", "engine", "GB", "wall s", "MB/s", *ROLES, "hzp excl. codec", "imports s", "main s/write"]
    head.append("GIL busy")
    lines = [[*head, "cap hzp GB/s", "cap proc GB/s"]]
    for r in rows:
        roles = [g(r["gil_s_per_gb"][k]) for k in ROLES]
        for k in ("hzp-*", "child procs"):  # the worker roles, with their noise
            roles[ROLES.index(k)] += f"±{r['gil_s_per_gb_3sd'][k]:.2f}" if r["samples"].get(k) else ""
        lines.append(
            [r["layout"], r["engine"], f"{r['gb']:.2f}", f"{r['wall_s']:.2f}", f"{r['gb'] * 1e3 / r['wall_s']:.0f}",
             *roles, g(r.get("hzp_excl_codec_gil_s_per_gb")), g(sum(r["importing_gil_s"].values()), ".2f"),
             f"{r['main_gil_s_per_write']:.2f}",
             f"{100 * r['parent_gil_busy']:.0f}%", g(r["cap_hzp_gb_s"], ".2f"), g(r["cap_process_gb_s"], ".2f")]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# -- Self-test: known loads, through the same attach-and-parse path ------------------------------------------------
SELF_TEST_CHILD = r"""
import json, multiprocessing, os, sys, threading, time, zlib
def spin(s, out):  # pure Python: holds the GIL whenever it runs
    t, c = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t < s: pass
    out[:] = [time.thread_time() - c, time.perf_counter() - t]
DATA = os.urandom(16 << 20)
def squeeze(s):  # zlib.compress releases the GIL while it works
    t = time.perf_counter()
    while time.perf_counter() - t < s: zlib.compress(DATA, 6)
if __name__ == "__main__":
    spun, forked = [], multiprocessing.get_context("fork").Array("d", 2)
    threads = [threading.Thread(target=spin, args=(1.0, spun), name="hzp-spin"),
               threading.Thread(target=time.sleep, args=(1.0,), name="sleep"),
               threading.Thread(target=squeeze, args=(1.0,), name="zlib")]
    print("@@ready", flush=True); sys.stdin.readline()
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    p = multiprocessing.get_context("fork").Process(target=spin, args=(1.0, forked)); p.start(); p.join()
    names = {t.ident: t.name for t in threading.enumerate() + threads}
    print("@@done " + json.dumps(names), flush=True); sys.stdin.readline()
    result = {"wall_s": time.perf_counter() - t0, "spin_cpu_wall": spun, "fork_cpu_wall": list(forked)}
    print("@@result " + json.dumps(result), flush=True)
"""


def self_test(rate: int, workdir: Path) -> dict:
    """A pure-Python loop must show GIL-held seconds between its thread's CPU time and its wall time (it holds
    the GIL whenever it runs, and keeps it while the OS preempts it); time.sleep 0; zlib.compress about 0."""
    raw, script = workdir / "gil-self-test.txt", workdir / "gil_self_test.py"
    script.write_text(SELF_TEST_CHILD)
    result, spy, names = profiled_run([sys.executable, str(script)], raw, rate)
    seen = {k: v / rate for k, v in parse_raw(raw, "hzp-*", script.name, spy, names).names.items()}
    spin, sleep, squeeze, forked = (seen.get(k, 0.0) for k in ("hzp-spin", "sleep", "zlib", "child: MainThread"))

    def within(s: float, cpu_wall: list[float], late: float = 0.0) -> bool:
        noise = 3 * (s * rate) ** 0.5 / rate + 2 / rate  # 3 sd of a Poisson count, and the window's edges
        return cpu_wall[0] - late - noise <= s <= cpu_wall[1] + noise

    (c, w), (fc, fw) = result["spin_cpu_wall"], result["fork_cpu_wall"]
    checks = {
        f"pure-Python loop, thread hzp-spin (cpu {c:.2f} s, wall {w:.2f} s)": (spin, within(spin, [c, w])),
        "time.sleep(1.0), thread sleep (expect 0)": (sleep, sleep <= 2 / rate),
        "zlib.compress of 16 MiB for 1 s, thread zlib (expect ~0)": (squeeze, squeeze <= 0.1),
        f"the loop in a fork()ed process (cpu {fc:.2f} s, wall {fw:.2f} s)": (forked, within(forked, [fc, fw], 0.35)),
    }
    spy.pop("failed_gil_samples")
    print(f"[self-test] rate {rate} Hz (one sample = {1e3 / rate:.0f} ms); py-spy {spy}")
    for what, (s, ok) in checks.items():
        print(f"   {'ok  ' if ok else 'FAIL'}  {what}: {s:.3f} s GIL-held")
    print("   (py-spy finds a new process up to ~0.3 s after it starts: the fork check allows for that)")
    if c < 0.8 * w:
        print(f"[warn] the loop got {c / w:.0%} of a core: the machine is loaded; a thread preempted while holding the"
              " GIL still holds it, so GIL-held seconds measured now are upper bounds")  # fmt: skip
    passed = all(ok for _, ok in checks.values())
    return {"rate_hz": rate, "py_spy": spy, "child": result, "seen_s": seen, "passed": passed,
            "checks": {k: {"seen_s": s, "ok": ok} for k, (s, ok) in checks.items()}}  # fmt: skip


# -- Main ----------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of the ephys recording (1e9 bytes)")
    p.add_argument("--quick", action="store_true", help="0.1 GB and 24 MiB buffers: a smoke test")
    p.add_argument("--configs", help="comma-separated layout:engine (default: serial, threads, processes, gpu-host "
                   f"on every layout, and 1MiB:stock); layouts {', '.join(LAYOUTS)}; engines {', '.join(ENGINES)}")  # fmt: skip
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--blocking", action="store_true", help="py-spy pauses the process at each sample (it falls "
                   "behind on a loaded machine, and then misses samples)")  # fmt: skip
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="default: every usable core")
    p.add_argument("--buffer-mb", type=int, default=96, help="iterator buffer (whole chunk rows or shards)")
    p.add_argument("--top", type=int, default=8, help="frames listed per configuration")
    p.add_argument("--workdir", type=Path, help="data and outputs (default: a temporary folder, deleted)")
    p.add_argument("--no-verify", action="store_true", help="do not compare what was written with the source")
    p.add_argument("--no-tune-malloc", action="store_true", help="leave glibc's malloc thresholds as they are "
                   "(WriteOptions.tune_malloc=False), for an A/B of the tuning")  # fmt: skip
    p.add_argument("--self-test", action="store_true", help="only check the method on known loads")
    p.add_argument("--lanes", type=int, default=None, help="gpu-host: lanes (default: gpu_streams' default)")
    p.add_argument("--cpu-helpers", type=int, default=None,
                   help="gpu-host: CPU workers sharing the lanes' tasks (default: the engine's; 0: none)")  # fmt: skip
    p.add_argument("--output", type=Path, help="JSON (default: benchmarks/results/gil-<cores>c[-quick]-<date>.json)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.gb, args.buffer_mb = min(args.gb, 0.1), min(args.buffer_mb, 24)
    args.pairs = [tuple(c.split(":", 1)) for c in args.configs.split(",")] if args.configs else DEFAULT
    for pair in args.pairs:
        if len(pair) != 2 or pair[0] not in LAYOUTS or pair[1] not in ENGINES:
            p.error(f"bad config {':'.join(pair)!r}: layout:engine, layouts {list(LAYOUTS)}, engines {ENGINES}")
    SPY_MODE[:] = [] if args.blocking else ["--nonblocking"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(Path(args.child).read_text()))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hzp-gil-"))
    workdir.mkdir(parents=True, exist_ok=True)
    spy_version = subprocess.run([str(PY_SPY), "--version"], capture_output=True, text=True).stdout.strip()
    facts = {**machine_facts(args.workers), "py_spy": spy_version}
    print(f"[machine] {facts['cpu_model']}, {facts['cores_usable']} usable cores, Python {facts['python']}, "
          f"{spy_version} ({'blocking' if args.blocking else 'nonblocking'}) at {args.rate} Hz")  # fmt: skip
    results: dict = {"machine": facts, "settings": {k: str(v) for k, v in vars(args).items() if k != "child"}}
    try:
        results["self_test"] = self_test(args.rate, workdir)
        if not args.self_test:
            case = ephys_case(workdir / f"ephys-{args.gb:g}GB.npy", args.gb * 1e9, args.buffer_mb, 0, print)
            warm = ephys_case(workdir / "ephys-warmup.npy", 32768 * 384 * 2, args.buffer_mb, 1, print)
            data = {"npy": str(case.npy), "warm_npy": str(warm.npy), "nbytes": case.nbytes}
            print(f"[data] {case.shape} int16, {case.nbytes / 1e9:.3f} GB; {args.workers} workers")
            results["rows"] = rows = [run_config(lay, eng, args, data, workdir) for lay, eng in args.pairs]
            results["table_markdown"] = table = fmt_table(rows)
            print(f"\nGIL-held seconds per GB written, per thread role (py-spy --gil at {args.rate} Hz):\n{table}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    tag = "-selftest" if args.self_test else "-quick" if args.quick else ""
    name = f"gil-{facts['cores_usable']}c{tag}-{dt.date.today():%Y%m%d}.json"
    save_json(args.output or REPO / "benchmarks" / "results" / name, results)
    return 0 if results["self_test"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
