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
import re
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


def self_test_child(contended: bool) -> None:
    """Known loads: one thread runs Python for 0.3 s (holds the GIL throughout), one sleeps 1 ms
    200 times (holds it for microseconds each time). ``contended``: on one CPU beside a busy process,
    so the scheduler takes the spinning holder off its CPU about half of the time."""
    hog = None
    if contended:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        hog = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
        )
        time.sleep(0.3)  # the hog runs

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
    if hog is not None:
        hog.kill()
        hog.wait()
    names = {t.native_id: t.name for t in threads}
    print("@@window " + json.dumps({"t0": t0, "t1": t1, "pid": os.getpid(), "names": names}), flush=True)


def self_test(workdir: Path) -> None:
    """The method on the known loads: the spinning thread must read ~0.3 s held, the napping one ~0; on one
    CPU shared with a busy process, the spinner's hold is still ~0.3 s of wall time but about half on CPU."""
    for contended in (False, True):
        argv = [sys.executable, __file__, "--self-test-child", *(["--contended"] if contended else [])]
        window, held = trace(argv, os.environ.copy(), workdir)
        wall = {window["names"].get(str(tid), "?"): sum(w for w, _ in h) for (_, tid), h in held.items()}
        cpu = {window["names"].get(str(tid), "?"): sum(c for _, c in h) for (_, tid), h in held.items()}
        spin, spin_cpu, nap = wall.get("spin", 0), cpu.get("spin", 0), wall.get("nap", 0)
        print(f"self-test{' (one CPU, beside a busy process)' if contended else ''}: spin {spin:.3f} s held "
              f"({spin_cpu:.3f} on CPU), nap {nap:.4f} s")  # fmt: skip
        assert 0.25 < spin < 0.36 and nap < 0.03, wall
        assert (0.05 < spin_cpu < 0.25) if contended else (spin_cpu > 0.8 * spin), cpu
    print("self-test passed")


# -- The parent: perf around the child, its trace summed per role ---------------------------------------------------
SWITCH = "sched:sched_switch"


def held_per_thread(script: str, t0: float, t1: float) -> dict[tuple[int, int], list[tuple[float, float]]]:
    """``perf script -F pid,tid,time,event,trace`` lines -> {(pid, tid): [(wall, on-CPU) seconds of each
    GIL hold in [t0, t1]]}. On-CPU leaves out the time the holder was switched out by the scheduler
    (``sched_switch``): on a machine with more cores than busy threads that time is not spent."""
    held: dict[tuple[int, int], list[tuple[float, float]]] = collections.defaultdict(list)
    since: dict[tuple[int, int], float] = {}
    key_of: dict[int, tuple[int, int]] = {}  # tid -> (pid, tid), for the scheduler's events
    switched_out: dict[int, float] = {}  # tid of a holder the scheduler took off its CPU -> when
    off_cpu: dict[int, float] = collections.defaultdict(float)  # tid -> off-CPU seconds in this hold
    for line in script.splitlines():
        parts = line.split()  # "PID/TID TIME: EVENT: [TRACE]"
        if len(parts) < 3 or "/" not in parts[0]:
            continue
        at, event = float(parts[1].rstrip(":")), parts[2].rstrip(":")
        if event == SWITCH:  # "prev_pid=A ... ==> next_comm=... next_pid=B ..."
            fields = dict(f.split("=", 1) for f in parts[3:] if "=" in f)
            prev, nxt = int(fields.get("prev_pid", -1)), int(fields.get("next_pid", -1))
            if prev in key_of and key_of[prev] in since:
                switched_out[prev] = at
            if nxt in switched_out:
                off_cpu[nxt] += at - max(switched_out.pop(nxt), t0)
            continue
        pid, tid = parts[0].split("/")
        key = (int(pid), int(tid))
        key_of[key[1]] = key
        if event == TAKE:
            since[key] = at
            off_cpu[key[1]] = 0.0
        elif event == DROP and key in since:
            start, end = max(since.pop(key), t0), min(at, t1)
            off = off_cpu.pop(key[1], 0.0)
            if end > start:
                held[key].append((end - start, max(0.0, end - start - off)))
    return held


def hold_summary(holds: list[tuple[float, float]], gb: float) -> dict:
    """GIL-held seconds (wall and on-CPU) and holds per GB of one kind of thread, and how long its holds are."""
    ordered = sorted(wall for wall, _ in holds)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0  # noqa: E731
    return {"s_per_gb": sum(ordered) / gb, "on_cpu_s_per_gb": sum(c for _, c in holds) / gb,
            "holds_per_gb": len(ordered) / gb, "p50_us": pick(0.5) * 1e6, "p99_us": pick(0.99) * 1e6,
            "max_ms": (ordered[-1] if ordered else 0.0) * 1e3,
            "over_1ms_s_per_gb": sum(h for h in ordered if h > 1e-3) / gb}  # fmt: skip


def trace(argv: list[str], env: dict, workdir: Path) -> tuple[dict, dict[tuple[int, int], list[float]]]:
    """Run ``argv`` (a child that prints ``@@window {t0, t1, pid, names}``) under perf; its window and holds."""
    data = workdir / "trace.data"
    perf = [
        "perf",
        "record",
        "-q",
        "-a",
        "-k",
        "CLOCK_MONOTONIC",
        "-e",
        TAKE,
        "-e",
        DROP,
        "-e",
        SWITCH,
        "-o",
        str(data),
    ]
    perf.append("--")
    done = subprocess.run(perf + argv, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@window ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the traced run failed (rc {done.returncode}): {done.stderr[-3000:]}")
    window = json.loads(lines[-1][len("@@window ") :])
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,tid,time,event,trace"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
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
    seconds, on_cpu, holds = collections.Counter(), collections.Counter(), collections.Counter()
    kinds: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)  # thread name without its number
    for (pid, tid), durations in held_by_thread.items():
        role = _role(pid != window["pid"], names.get(tid))
        seconds[role] += sum(wall for wall, _ in durations)
        on_cpu[role] += sum(c for _, c in durations)
        holds[role] += len(durations)
        kind = "(child)" if pid != window["pid"] else re.sub(r"[_-]\d+$", "", names.get(tid) or "(unnamed)")
        kinds[kind] += durations
    gb = cfg["nbytes"] / 1e9
    return {"wall_s": window["t1"] - window["t0"], "per_gb": {r: seconds[r] / gb for r in ROLES},
            "on_cpu_per_gb": {r: on_cpu[r] / gb for r in ROLES}, "holds_per_gb": {r: holds[r] / gb for r in ROLES},
            "by_thread": {kind: hold_summary(d, gb) for kind, d in sorted(kinds.items())}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--self-test-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--contended", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--self-test", action="store_true", help="check the method on known loads (a few seconds)")
    p.add_argument("--configs", default="1MiB:threads", help="LAYOUT:ENGINE,... (layouts and engines of bench_gil.py)")
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--buffer-mb", type=int, default=96)
    p.add_argument("--repos", default=str(REPO), help="checkouts to compare, interleaved ABBA (default: this one)")
    p.add_argument("--rounds", type=int, default=1, help="ABBA rounds (each runs every checkout twice)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--lanes", type=int, default=None, help="gpu-host: lanes (default: gpu_streams' default)")
    p.add_argument("--cpu-helpers", type=int, default=None,
                   help="gpu-host: CPU workers sharing the lanes' tasks (default: the engine's; 0: none)")  # fmt: skip
    p.add_argument("--output", default=None, help="JSON path (default: results/gil-trace-<host>-<time>.json)")
    args = p.parse_args()
    if args.child:
        return child_main(json.loads(Path(args.child).read_text()))
    if args.self_test_child:
        return self_test_child(args.contended)
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
                   "nbytes": case.nbytes, "repo": repo, "lanes": args.lanes, "cpu_helpers": args.cpu_helpers}  # fmt: skip
            run = {"config": spec, "repo": repo, **traced_run(cfg, workdir)}
            worker = WORKER_ROLE.get(engine, "hzp-*")
            print(f"{spec:<22} {Path(repo).name:<12} worker ({worker}) {run['per_gb'][worker]:.3f} s/GB "
                  f"({run['on_cpu_per_gb'][worker]:.3f} on CPU), "
                  f"{run['holds_per_gb'][worker]:.0f} holds/GB; main {run['per_gb']['main']:.3f}, zarr_io "
                  f"{run['per_gb']['zarr_io']:.3f}; wall {run['wall_s']:.2f} s", flush=True)  # fmt: skip
            for kind, t in run["by_thread"].items():
                if t["s_per_gb"] >= 0.005:
                    print(f"    {kind:<18} {t['s_per_gb']:.3f} s/GB ({t['on_cpu_s_per_gb']:.3f} on CPU), "
                          f"{t['holds_per_gb']:.0f} holds/GB; hold p50 "
                          f"{t['p50_us']:.0f} us, p99 {t['p99_us']:.0f} us, max {t['max_ms']:.1f} ms; holds over "
                          f"1 ms {t['over_1ms_s_per_gb']:.3f} s/GB")  # fmt: skip
            runs.append(run)
    print("\nmedians, worker role s/GB (implied cap 1 GB / that):")
    for spec in args.configs.split(","):
        worker = WORKER_ROLE.get(spec.split(":")[1], "hzp-*")
        for repo in repos:
            for what in ("per_gb", "on_cpu_per_gb"):
                values = [r[what][worker] for r in runs if r["config"] == spec and r["repo"] == repo]
                print(f"  {spec:<22} {repo} {'held' if what == 'per_gb' else 'held on CPU'}: "
                      f"{statistics.median(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.output or REPO / "benchmarks" / "results" / f"gil-trace-{os.uname().nodename}-{stamp}.json")
    save_json(out, {"method": "perf uprobes on take_gil/drop_gil", "machine": machine_facts(args.workers), "gb": args.gb,
                    "workers": args.workers, "runs": runs})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
