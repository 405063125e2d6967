"""The ``hdmf-zarr-parallel`` command: ``demo``, ``info``, ``convert``, ``bench``.

Errors are reported as one line on stderr with a nonzero exit status, never as a
traceback (set ``HDMF_ZARR_PARALLEL_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from .options import ENGINES

PROG = "hdmf-zarr-parallel"
DEPENDENCIES = ("hdmf", "hdmf-zarr", "zarr", "numcodecs", "pynwb", "numpy", "tqdm")
GPU_DISTRIBUTIONS = (
    ("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy")),
    ("nvCOMP", ("nvidia-nvcomp-cu13", "nvidia-nvcomp-cu12", "nvidia-nvcomp")),
    ("kvikio", ("kvikio-cu13", "kvikio-cu12", "kvikio")),
)
DEBUG_ENV = "HDMF_ZARR_PARALLEL_DEBUG"


class CliError(Exception):
    """An error to report as one line, with its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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
    demo.add_argument("--seconds", type=_positive_float, default=45.0, help="recording length (default 45)")
    demo.add_argument("--channels", type=_positive_int, default=384, help="number of channels (default 384)")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the two NWB Zarr stores, kept afterwards (default: a temporary folder)",
    )
    demo.add_argument("--engine", choices=ENGINES, default=None, help="write engine (default auto)")
    demo.add_argument("--workers", type=_positive_int, default=None, help="worker count (default: one per core)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="versions, GPU/CUDA/nvCOMP/kvikio availability, the engine auto picks")
    info.set_defaults(func=_cmd_info)

    for name, text in (
        ("convert", "convert a recording to NWB Zarr (not implemented yet)"),
        ("bench", "benchmark engines and codecs (not implemented yet)"),
    ):
        stub = sub.add_parser(name, help=text)
        stub.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        stub.set_defaults(func=_cmd_not_implemented)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        seconds=args.seconds, channels=args.channels, workdir=args.workdir, engine=args.engine, workers=args.workers
    )
    return 0 if run_demo(config, sys.stdout) else 1


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cmd_info(args: argparse.Namespace) -> int:
    from . import __version__

    rows: list[tuple[str, str]] = [(PROG, __version__), ("python", f"{platform.python_version()} ({sys.executable})")]
    rows += [(name, _version(name) or "not installed") for name in DEPENDENCIES]
    rows.append(("platform", f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"))
    rows += [(label, _version(*dists) or "not installed") for label, dists in GPU_DISTRIBUTIONS]
    try:
        from .gpu_support import gpu_status
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
        from .engines import choose_auto_engine

        name, reason = choose_auto_engine()
    except Exception as exc:  # noqa: BLE001 - info reports, it does not fail
        name, reason = "unknown", f"{type(exc).__name__}: {exc}"
    print(f"auto engine: {name} — {reason}")
    return 0


def _cmd_not_implemented(args: argparse.Namespace) -> int:
    raise CliError(f"{args.command}: not implemented yet", status=2)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.status
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
