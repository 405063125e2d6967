#!/usr/bin/env python
"""The GIL budget measured exactly: every GIL hold of every thread, traced with Linux ``perf``.

``bench_gil.py`` samples which thread holds the GIL (py-spy, 250 Hz): portable, and it names the
code, but a 1 GB write gives a few hundred samples per role and single runs swing by tens of per
cent. This traces the holds themselves instead: ``perf`` uprobes on CPython's ``take_gil`` (its
return: the thread now holds the GIL) and ``drop_gil`` (its entry: it is letting go), recorded for
the whole child process with ``CLOCK_MONOTONIC`` timestamps, so a thread's GIL-held seconds in the
write are the sum of its take-to-drop intervals inside the write's window (each probe adds ~2 µs
to a hold). Roles and the child write are bench_gil.py's (``prepare_write``: the same NWB and
bare-array writes), thread roles by the names the child records per native thread id.

It needs root (or ``perf_event_paranoid`` <= 1 with uprobe rights), ``perf``, and a CPython whose
``take_gil``/``drop_gil`` symbols are in its symbol table (python.org, pyenv and distribution
builds keep them). ``--repos A,B`` runs two checkouts of this project interleaved ABBA on the same
data (the way to compare a change with the commit before it):

    python benchmarks/bench_gil_trace.py --self-test      # the method on known loads
    python benchmarks/bench_gil_trace.py --configs 1MiB:threads --gb 1
    python benchmarks/bench_gil_trace.py --configs 1MiB:threads --repos /tmp/before,. --rounds 2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from bench_gil import LAYOUTS, REPO, ROLES, WORKER_ROLE, _role, prepare_native, prepare_write
from bench_write import ephys_case, machine_facts, save_json

GROUP = "hzp_gil"
TAKE, DROP = f"{GROUP}:take__return", f"{GROUP}:drop"


def interpreter_binary() -> str:
    """The file holding the interpreter's code: libpython when it is shared, else the executable."""
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        path = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
        if path.exists():
            return str(path)
    return os.path.realpath(sys.executable)


def ensure_probes(binary: str) -> None:
    """The two uprobes on ``binary`` (added once; ``perf probe -d 'hzp_gil:*'`` removes them)."""
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    for event, spec in ((TAKE, "take=take_gil%return"), (DROP, "drop=drop_gil")):
        if any(line.split()[:1] == [event] and binary in line for line in listed.splitlines()):
            continue
        done = subprocess.run(
            ["perf", "probe", "-q", "-x", binary, "-a", f"{GROUP}:{spec}"], capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"cannot add the uprobe {spec} on {binary} (root, perf and symbols needed): {done.stderr}")


# -- The child: one write, its window and its threads' names -------------------------------------------------------
def child_main(cfg: dict) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    workdir = Path(cfg["workdir"])
    warm, _ = prepare_write(cfg, cfg["warm_npy"], workdir / "warm.zarr")
    warm()
    shutil.rmtree(workdir / "warm.zarr")
    prepare_native()
    write, _ = prepare_write(cfg, cfg["npy"], workdir / "out.zarr")
    names = {threading.get_native_id(): "MainThread"}
    start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        start(self)
        names[self.native_id] = self.name

    threading.Thread.start = recording_start
    names.update({t.native_id: t.name for t in threading.enumerate()})
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    write()
    t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    shutil.rmtree(workdir / "out.zarr", ignore_errors=True)
    print("@@window " + json.dumps({"t0": t0, "t1": t1, "pid": os.getpid(), "names": names}), flush=True)


def self_test_child() -> None:
    """Known loads: one thread runs Python for 0.3 s (holds the GIL throughout), one sleeps 1 ms
    200 times (holds it for microseconds each time)."""

    def spin() -> None:
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass

    def nap() -> None:
        for _ in range(200):
            time.sleep(0.001)

    threads = [threading.Thread(target=spin, name="spin"), threading.Thread(target=nap, name="nap")]
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    names = {t.native_id: t.name for t in threads}
    print("@@window " + json.dumps({"t0": t0, "t1": t1, "pid": os.getpid(), "names": names}), flush=True)


def self_test(workdir: Path) -> None:
    """The method on the known loads: the spinning thread must read ~0.3 s, the napping one ~0."""
    window, held = trace([sys.executable, __file__, "--self-test-child"], os.environ.copy(), workdir)
    by_name = {window["names"].get(str(tid), "?"): seconds for (_, tid), (seconds, _) in held.items()}
    print(f"self-test: spin {by_name.get('spin', 0):.3f} s (expected ~0.30), nap {by_name.get('nap', 0):.4f} s (~0)")
    assert 0.25 < by_name.get("spin", 0) < 0.36 and by_name.get("nap", 0) < 0.03, by_name
    print("self-test passed")


# -- The parent: perf around the child, its trace summed per role ---------------------------------------------------
def held_per_thread(script: str, t0: float, t1: float) -> dict[tuple[int, int], list[float]]:
    """``perf script -F pid,tid,time,event`` lines -> {(pid, tid): [GIL-held seconds in [t0, t1], holds]}."""
    held: dict[tuple[int, int], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    since: dict[tuple[int, int], float] = {}
    for line in script.splitlines():
        parts = line.split()  # "PID/TID TIME: EVENT:"
        if len(parts) < 3 or "/" not in parts[0]:
            continue
        pid, tid = parts[0].split("/")
        key, at, event = (int(pid), int(tid)), float(parts[1].rstrip(":")), parts[2].rstrip(":")
        if event == TAKE:
            since[key] = at
        elif event == DROP and key in since:
            start, end = max(since.pop(key), t0), min(at, t1)
            if end > start:
                held[key][0] += end - start
                held[key][1] += 1
    return held


def trace(argv: list[str], env: dict, workdir: Path) -> tuple[dict, dict[tuple[int, int], list[float]]]:
    """Run ``argv`` (a child that prints ``@@window {t0, t1, pid, names}``) under perf; its window and holds."""
    data = workdir / "trace.data"
    perf = ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e", TAKE, "-e", DROP, "-o", str(data), "--"]
    done = subprocess.run(perf + argv, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@window ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the traced run failed (rc {done.returncode}): {done.stderr[-3000:]}")
    window = json.loads(lines[-1][len("@@window ") :])
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,tid,time,event"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    data.unlink()
    return window, held_per_thread(script, window["t0"], window["t1"])


def traced_run(cfg: dict, workdir: Path) -> dict:
    """One traced write of ``cfg``: wall seconds, GIL-held seconds and holds per role."""
    cfg_file = workdir / "cfg.json"
    cfg_file.write_text(json.dumps(cfg))
    repo = Path(cfg["repo"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(repo / "benchmarks" / "bench_gil_trace.py"), "--child", str(cfg_file)]
    if not (repo / "benchmarks" / "bench_gil_trace.py").exists():  # an older checkout: this file's child
        argv[1] = __file__
        env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), str(repo / "benchmarks"), env["PYTHONPATH"]])
    window, held_by_thread = trace(argv, env, workdir)
    names = {int(k): v for k, v in window["names"].items()}
    seconds, holds = collections.Counter(), collections.Counter()
    for (pid, tid), (held, count) in held_by_thread.items():
        role = _role(pid != window["pid"], names.get(tid))
        seconds[role] += held
        holds[role] += count
    gb = cfg["nbytes"] / 1e9
    return {"wall_s": window["t1"] - window["t0"], "per_gb": {r: seconds[r] / gb for r in ROLES},
            "holds_per_gb": {r: holds[r] / gb for r in ROLES}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--self-test-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--self-test", action="store_true", help="check the method on known loads (a few seconds)")
    p.add_argument("--configs", default="1MiB:threads", help="LAYOUT:ENGINE,... (layouts and engines of bench_gil.py)")
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--buffer-mb", type=int, default=96)
    p.add_argument("--repos", default=str(REPO), help="checkouts to compare, interleaved ABBA (default: this one)")
    p.add_argument("--rounds", type=int, default=1, help="ABBA rounds (each runs every checkout twice)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--output", default=None, help="JSON path (default: results/gil-trace-<host>-<time>.json)")
    args = p.parse_args()
    if args.child:
        return child_main(json.loads(Path(args.child).read_text()))
    if args.self_test_child:
        return self_test_child()
    ensure_probes(interpreter_binary())
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gil-trace-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.self_test:
        return self_test(workdir)
    case = ephys_case(workdir / f"ephys-{args.gb:g}GB.npy", args.gb * 1e9, args.buffer_mb, 0, print)
    warm = ephys_case(workdir / "ephys-warmup.npy", 32768 * 384 * 2, args.buffer_mb, 1, print)
    npy, warm = case.npy, warm.npy
    repos = [str(Path(r).resolve()) for r in args.repos.split(",")]
    order = repos if len(repos) == 1 else [repos[0], repos[1], repos[1], repos[0]] * args.rounds
    runs: list[dict] = []
    for spec in args.configs.split(","):
        layout, engine = spec.split(":")
        assert layout in LAYOUTS, f"layout {layout!r}: one of {sorted(LAYOUTS)}"
        for repo in order:
            cfg = {"layout": layout, "engine": engine, "workers": args.workers, "buffer_mb": args.buffer_mb,
                   "tune_malloc": True, "workdir": str(workdir), "npy": str(npy), "warm_npy": str(warm),
                   "nbytes": case.nbytes, "repo": repo}  # fmt: skip
            run = {"config": spec, "repo": repo, **traced_run(cfg, workdir)}
            worker = WORKER_ROLE.get(engine, "hzp-*")
            print(f"{spec:<22} {Path(repo).name:<12} worker ({worker}) {run['per_gb'][worker]:.3f} s/GB, "
                  f"{run['holds_per_gb'][worker]:.0f} holds/GB; main {run['per_gb']['main']:.3f}, zarr_io "
                  f"{run['per_gb']['zarr_io']:.3f}; wall {run['wall_s']:.2f} s", flush=True)  # fmt: skip
            runs.append(run)
    print("\nmedians, worker role s/GB (implied cap 1 GB / that):")
    for spec in args.configs.split(","):
        worker = WORKER_ROLE.get(spec.split(":")[1], "hzp-*")
        for repo in repos:
            values = [r["per_gb"][worker] for r in runs if r["config"] == spec and r["repo"] == repo]
            print(f"  {spec:<22} {repo}: {statistics.median(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.output or REPO / "benchmarks" / "results" / f"gil-trace-{os.uname().nodename}-{stamp}.json")
    save_json(out, {"method": "perf uprobes on take_gil/drop_gil", "machine": machine_facts(args.workers), "gb": args.gb,
                    "workers": args.workers, "runs": runs})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
