"""The ``hdmf-zarr-parallel`` command: ``demo``, ``info``, ``convert``, ``bench``.

Errors are reported as one line on stderr with a nonzero exit status, never as a
traceback (set ``HDMF_ZARR_PARALLEL_DEBUG=1`` to see the traceback). SIGTERM (``kill``, a
batch system's time limit) ends a command the way Ctrl-C does, cleanup included: status 143
instead of 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .._versions import CUPY_DISTRIBUTIONS, KVIKIO_DISTRIBUTIONS, NVCOMP_DISTRIBUTIONS, installed_version
from ..options import ENGINES
from .cli_types import names_arg, nonnegative_float, positive_float, positive_int, shape_arg, shards_arg
from .convert_plan import CODECS, DEFAULT_STREAM_MIN_BYTES
from .convert_presets import LAYOUTS, PRESETS

PROG = "hdmf-zarr-parallel"
DEPENDENCIES = ("hdmf", "hdmf-zarr", "zarr", "numcodecs", "pynwb", "numpy", "tqdm")
GPU_DISTRIBUTIONS = (("cupy", CUPY_DISTRIBUTIONS), ("nvCOMP", NVCOMP_DISTRIBUTIONS), ("kvikio", KVIKIO_DISTRIBUTIONS))
DEBUG_ENV = "HDMF_ZARR_PARALLEL_DEBUG"


class CliError(Exception):
    """An error to report as one line, with its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so every ``KeyboardInterrupt`` cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`Terminated` instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog=PROG, description="Parallel (CPU pool or GPU/nvCOMP) writes of HDMF/NWB data to Zarr v3.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="write a synthetic ephys recording to NWB Zarr, verify it, compare with stock hdmf-zarr",
        description="Write a synthetic int16 ephys recording (default 384 channels x 30 kHz x 45 s, about 1 GB) "
        "as NWB Zarr with NWBParallelZarrIO, read it back with stock NWBZarrIO and compare every sample, "
        "then time stock NWBZarrIO on the same data.",
    )
    demo.add_argument("--seconds", type=positive_float, default=45.0, help="recording length (default 45)")
    demo.add_argument("--channels", type=positive_int, default=384, help="number of channels (default 384)")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the two NWB Zarr stores, kept afterwards (default: a temporary folder)",
    )
    demo.add_argument("--engine", choices=ENGINES, default=None, help="write engine (default auto)")
    demo.add_argument("--workers", type=positive_int, default=None, help="worker count (default: one per core)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="versions, GPU/CUDA/nvCOMP/kvikio availability, the engine auto picks")
    info.set_defaults(func=_cmd_info)

    convert = sub.add_parser(
        "convert",
        help="convert an NWB HDF5 file (or NWB Zarr v2 store) to NWB Zarr through the parallel (or GPU) engines",
        description="Convert an NWB HDF5 file to NWB Zarr: the same content as stock NWBZarrIO.export "
        "(link_data=False); or an NWB Zarr v2 store to NWB Zarr v3: the same content as stock "
        "NWBZarrV2IO.convert_to_v3. Every large numeric dataset is streamed through the parallel (or GPU) engine "
        "and small ones copied as stock does. The store is written under a temporary name and renamed "
        "when complete.",
    )
    convert.add_argument("input", type=Path, help="NWB HDF5 file (.nwb), or NWB Zarr v2 store (hdmf-zarr <= 0.13)")
    convert.add_argument("output", type=Path, help="NWB Zarr store to create (e.g. session.nwb.zarr)")
    convert.add_argument("--engine", choices=ENGINES, default="auto", help="write engine (default auto)")
    convert.add_argument("--workers", type=positive_int, default=None, help="worker count (default: one per core)")
    convert.add_argument(
        "--codec",
        choices=CODECS,
        default=None,
        help="compressor for numeric datasets (default: the HDF5 file's own, mapped as stock export does; "
        "zarr's zstd when it has none)",
    )
    convert.add_argument(
        "--level",
        type=int,
        default=None,
        help="codec level (zstd -131072..22, default 0 = zstd's 3; gzip/blosc 0..9, default 5; "
        "lz4: acceleration >= 1, default 1)",
    )
    layout = convert.add_mutually_exclusive_group()
    layout.add_argument(
        "--chunks",
        type=shape_arg,
        default=None,
        metavar="SHAPE",
        help="chunk shape for streamed datasets of that rank, e.g. 32768,64 (default: the HDF5 chunks, "
        "else zarr's choice, as stock export)",
    )
    layout.add_argument(
        "--chunk-mb", type=positive_float, default=None, metavar="MB", help="target chunk size in MB instead"
    )
    convert.add_argument(
        "--shards",
        type=shards_arg,
        default=None,
        metavar="K|SHAPE",
        help="shard the streamed datasets: K chunks per shard along the first axis (whole extent on the "
        "others), or a shard shape such as 524288,384",
    )
    convert.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="keep",
        help="a storage preset for the streamed datasets: "
        + "; ".join(f"{name}: {preset.summary}" for name, preset in PRESETS.items())
        + ". keep (default): the source's layout, or what --codec/--chunks/--shards say; a preset refuses those",
    )
    convert.add_argument(
        "--stream-min-mb",
        type=nonnegative_float,
        default=DEFAULT_STREAM_MIN_BYTES / 2**20,
        metavar="MB",
        help=f"numeric datasets of at least this size go through the engine (default {DEFAULT_STREAM_MIN_BYTES >> 20})",
    )
    convert.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS|local",
        help="with --engine dask: a Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster "
        "of --workers single-threaded processes",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    convert.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Zarr v2 input: decode its pickle-encoded datasets (hdmf-zarr <= 0.13 writes electrodes/group "
        "that way); unpickling can run arbitrary code, so only for files you trust",
    )
    convert.add_argument(
        "--verify", action="store_true", help="read input and output back and compare every dataset and attribute"
    )
    convert.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    convert.set_defaults(func=_cmd_convert)

    bench = sub.add_parser(
        "bench",
        help="benchmark write throughput on this machine: stock hdmf-zarr next to each engine, table + PNG chart",
        description="Generate realistic int16 ephys and uint16 imaging recordings, write each as NWB Zarr with "
        "stock hdmf-zarr (serial and number_of_jobs=N) and with each engine of hdmf-zarr-parallel (same chunks "
        "and codec), check every output reads back bit-exact, print a table and save a PNG bar chart.",
    )
    bench.add_argument("--quick", action="store_true", help="tiny data (24 MB ephys, 12 MB imaging): seconds")
    bench.add_argument("--ephys-mb", type=positive_float, default=None, help="ephys size in MB (default 500)")
    bench.add_argument("--imaging-mb", type=positive_float, default=None, help="imaging size in MB (default 250)")
    bench.add_argument("--cases", type=names_arg, default=("ephys", "imaging"), help="comma-separated: ephys, imaging")
    bench.add_argument(
        "--writers",
        type=names_arg,
        default=None,
        help="comma-separated, from stock-serial, stock-jobs, serial, threads, processes, gpu "
        "(default: all but serial; gpu only where usable)",
    )
    bench.add_argument("--workers", type=positive_int, default=None, help="N (default: one per core)")
    bench.add_argument("--repeats", type=positive_int, default=1, help="writes per writer; the best counts")
    bench.add_argument(
        "--png", type=Path, default=Path("hdmf-zarr-parallel-bench.png"), help="chart path (default: ./%(default)s)"
    )
    bench.add_argument(
        "--workdir", type=Path, default=None, help="folder for data and outputs, kept (default: temporary)"
    )
    bench.add_argument("--no-verify", action="store_true", help="do not read each output back")
    bench.set_defaults(func=_cmd_bench)
    return parser


def _cmd_convert(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.scheduler is not None and args.engine != "dask":
        raise CliError("convert: --scheduler needs --engine dask", status=2)
    with contextlib.ExitStack() as stack:
        client = _dask_client(args.scheduler, args.workers, stack) if args.scheduler is not None else None
        return _convert(args, progress, client)


def _dask_client(address: str, workers: int | None, stack: contextlib.ExitStack):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CliError("convert: --engine dask needs the dask extra (pip install 'hdmf-zarr-parallel[dask]')") from None
    if address == "local":
        from ..options import default_workers

        cluster = stack.enter_context(
            LocalCluster(
                n_workers=workers or default_workers(), threads_per_worker=1, processes=True, dashboard_address=None
            )
        )
        return stack.enter_context(Client(cluster))
    return stack.enter_context(Client(address, timeout=30))


def _convert(args: argparse.Namespace, progress: bool, client) -> int:
    from .convert import ConvertError, ConvertOptions, convert

    try:
        options = ConvertOptions(
            engine=args.engine,
            workers=args.workers,
            codec=args.codec,
            level=args.level,
            chunks=args.chunks,
            chunk_mb=args.chunk_mb,
            shards=args.shards,
            stream_min_bytes=max(1, int(args.stream_min_mb * 2**20)),
            overwrite=args.overwrite,
            verify=args.verify,
            progress=progress,
            client=client,
            allow_pickle=args.allow_pickle,
            layout=args.layout,
        )
        report = convert(args.input, args.output, options, log=lambda text: print(text, flush=True))
    except ConvertError as exc:
        raise CliError(f"convert: {exc}") from None
    print(report.summary())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULT_WRITERS, BenchConfig, run_bench
    from .bench_chart import MissingExtraError

    settings = {
        "cases": args.cases,
        "writers": args.writers or DEFAULT_WRITERS,
        "workers": args.workers,
        "repeats": args.repeats,
        "workdir": args.workdir,
        "png": args.png,
        "verify": not args.no_verify,
    }
    settings.update({k: v for k, v in (("ephys_mb", args.ephys_mb), ("imaging_mb", args.imaging_mb)) if v})
    try:
        config = BenchConfig.quick(**settings) if args.quick else BenchConfig(**settings)
    except ValueError as exc:
        raise CliError(f"bench: {exc}", status=2) from None
    try:
        run_bench(config, sys.stdout)
    except MissingExtraError as exc:
        raise CliError(f"bench: {exc}") from None
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        seconds=args.seconds, channels=args.channels, workdir=args.workdir, engine=args.engine, workers=args.workers
    )
    return 0 if run_demo(config, sys.stdout) else 1


def _cmd_info(args: argparse.Namespace) -> int:
    from .. import __version__

    rows: list[tuple[str, str]] = [(PROG, __version__), ("python", f"{platform.python_version()} ({sys.executable})")]
    rows += [(name, installed_version(name) or "not installed") for name in DEPENDENCIES]
    rows.append(("platform", f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"))
    rows += [(label, installed_version(*dists) or "not installed") for label, dists in GPU_DISTRIBUTIONS]
    try:
        from ..gpu.status import gpu_status
    except ImportError as exc:
        rows.append(("GPU", f"unknown (gpu_support unavailable: {exc})"))
    else:
        status = gpu_status()
        if status.available:
            rows.append(("GPU", f"available: {status.device_name}"))
            rows += [
                ("  cupy", str(status.cupy_version)),
                ("  nvCOMP", str(status.nvcomp_version)),
                ("  kvikio", status.kvikio_version or "not installed"),
            ]
        else:
            rows.append(("GPU", f"not available: {status.reason}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    try:
        from ..engines import choose_auto_engine

        name, reason = choose_auto_engine()
    except Exception as exc:  # noqa: BLE001 - info reports, it does not fail
        name, reason = "unknown", f"{type(exc).__name__}: {exc}"
    print(f"auto engine: {name} — {reason}")
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.status
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not dump tracebacks
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
