"""What a write did, per dataset and in all: which engine wrote each dataset and why, bytes, seconds, MB/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetReport:
    """One dataset of a write: where it went (``engine``), why (``reason``), how fast, and what the
    route adds (``detail``: the GPU engine's units encoded by lanes and by CPU workers)."""

    name: str
    engine: str
    reason: str
    bytes_written: int
    seconds: float
    detail: str = ""

    @property
    def mbps(self) -> float:
        return self.bytes_written / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def line(self) -> str:
        why = f"  ({self.reason})" if self.reason else ""
        detail = f"; {self.detail}" if self.detail else ""
        return (
            f"{self.name}: {self.engine}, {self.bytes_written / 1e6:.1f} MB in {self.seconds:.2f} s "
            f"({self.mbps:.1f} MB/s){detail}{why}"
        )


@dataclass(frozen=True)
class WriteReport:
    """What one queue exhaustion did: for logs, benchmarks and tests of the memory bound.

    ``engine`` names what actually wrote the data: the engine asked for, or, where datasets
    went elsewhere (a process pool's thread fallback, the GPU engine's lanes and CPU workers), each route
    taken; ``per_dataset`` says which dataset went where and why.
    """

    engine: str
    datasets: int
    bytes_written: int
    peak_inflight_bytes: int
    resized: tuple[str, ...] = ()  # datasets that sequential iterators grew past their announced shape
    per_dataset: tuple[DatasetReport, ...] = ()

    def summary(self) -> str:
        """A few lines for people: the totals, then one line per dataset."""
        lines = [
            f"wrote {self.datasets} dataset(s), {self.bytes_written / 1e6:.1f} MB with {self.engine}; "
            f"peak in flight {self.peak_inflight_bytes / 1e6:.1f} MB"
        ]
        lines += [f"  {d.line()}" for d in self.per_dataset]
        return "\n".join(lines)


@dataclass
class DatasetTally:
    """Counts one dataset's stored bytes and the span from its first task to its last (thread-safe)."""

    name: str
    engine: str
    reason: str
    bytes_written: int = 0
    detail: Callable[[], str] | None = None  # the route's detail, asked for when the write has ended
    started: float | None = None
    ended: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def task_started(self) -> None:
        with self._lock:
            if self.started is None:
                self.started = time.perf_counter()

    def task_done(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_written += nbytes
            self.ended = time.perf_counter()

    def report(self) -> DatasetReport:
        seconds = (self.ended - self.started) if self.started is not None and self.ended is not None else 0.0
        detail = self.detail() if self.detail is not None else ""
        return DatasetReport(self.name, self.engine, self.reason, self.bytes_written, seconds, detail)


def engines_used(asked: str, tallies: list[DatasetTally]) -> str:
    """The engine asked for, or every route the datasets took where some went elsewhere."""
    used = sorted({t.engine for t in tallies})
    if not used or used == [asked]:
        return asked
    counts = {name: sum(t.engine == name for t in tallies) for name in used}
    return "; ".join(f"{name} ({_datasets(n)})" for name, n in counts.items())


def _datasets(n: int) -> str:
    return f"{n} dataset" if n == 1 else f"{n} datasets"
