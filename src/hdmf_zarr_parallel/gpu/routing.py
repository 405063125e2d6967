"""Which datasets the GPU engine's lanes write and which its CPU workers write, and how many CPU workers.

nvCOMP compresses each independent frame (a chunk, an inner chunk of a shard, or one stream
of a Blosc block) serially on the device, so a batch of few, large frames leaves most of the
GPU idle while the frames crawl through: the bytes per frame, not the bytes per batch, decide
whether the GPU is faster than the CPU codecs. Datasets whose frames are larger than
:data:`MAX_GPU_FRAME_BYTES` go to the CPU workers, like those whose chain the GPU cannot write.
Blosc chunks are split into blocks of at most ``blosc_frame.STREAM_NBYTES`` per stream, so even
large Blosc chunks stay on the GPU. A dataset too small to fill a batch is fine on either: it
stays where its layout sends it, and the CPU workers may take its tasks when the lanes are busy.
"""

from __future__ import annotations

from ..engines.base import capped_workers, thread_limit
from ..options import default_workers
from . import algorithms
from .plan import GpuCodecPlan

__all__ = ["MAX_GPU_FRAME_BYTES", "cpu_worker_count", "format_bytes", "frame_nbytes", "layout_route"]

#: Frames larger than this are written by the CPU workers. nvCOMP's throughput per byte falls as
#: frames grow, and on the device measured the GPU path was only at parity with the threads engine
#: at frames a little larger than this: above it the CPU is as fast, and the GPU is better left to
#: the datasets it speeds up (benchmarks/RESULTS.md has the measurement).
MAX_GPU_FRAME_BYTES = 512 << 10


def frame_nbytes(plan: GpuCodecPlan) -> int:
    """The largest piece of one unit that nvCOMP compresses as one serial frame."""
    _, sizes = algorithms.get(plan.algorithm).streams(plan)
    return int(max(sizes)) if len(sizes) else plan.chunk_nbytes


def _frame_name(plan: GpuCodecPlan) -> str:
    if len(algorithms.get(plan.algorithm).streams(plan)[1]) > 1:
        return "Blosc streams"
    return "inner chunks" if plan.sharded else "chunks"


def layout_route(plan: GpuCodecPlan, max_frame_bytes: int = MAX_GPU_FRAME_BYTES) -> tuple[bool, str]:
    """Whether the lanes should write a dataset of this plan, and why (for the write report)."""
    frame = frame_nbytes(plan)
    size, limit = format_bytes(frame), format_bytes(max_frame_bytes)
    name = _frame_name(plan)
    if frame > max_frame_bytes:
        return (
            False,
            f"{size} {name} are one nvCOMP frame each; the GPU is not faster than the CPU above {limit} frames",
        )
    return True, f"{size} {name} are one nvCOMP frame each; frames up to {limit} stay on the GPU"


def cpu_worker_count(helpers: int | None, lanes: int) -> tuple[int, bool]:
    """CPU workers beside ``lanes`` lanes, and whether they share the GPU-routed work.

    ``helpers`` is ``gpu_cpu_helpers``: ``None`` shares with one worker per core the lanes leave
    (each lane keeps a core busy with staging copies, framing and shard assembly, while the
    writer threads mostly wait on storage, so they get no cores of their own); ``0`` turns
    sharing off, the same count still writing the CPU-routed datasets; ``N`` shares with N.
    """
    automatic = max(1, default_workers() - lanes)
    if helpers is None:
        return automatic, True
    if helpers == 0:
        return automatic, False
    return capped_workers(helpers, thread_limit(), "CPU workers", "as for engine='threads'"), True


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``512 KiB``, ``1.0 MiB``."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.0f} KiB"
    return f"{n} B"
