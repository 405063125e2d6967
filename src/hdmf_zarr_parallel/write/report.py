"""What one write did, for logs, benchmarks and tests of the memory bound."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WriteReport:
    """What one queue exhaustion did: the engine, how many datasets and bytes, the peak bytes in flight."""

    engine: str
    datasets: int
    bytes_written: int
    peak_inflight_bytes: int
    resized: tuple[str, ...] = ()  # datasets that sequential iterators grew past their announced shape
