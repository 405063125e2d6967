"""What a conversion did: :class:`ConvertReport`, printed by ``hdmf-zarr-parallel convert``."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ConvertReport:
    """The source and output, the engine and time, what was streamed and copied, sizes, verification."""

    source: Path
    output: Path
    engine: str
    seconds: float
    streamed: list[tuple[str, int]] = field(default_factory=list)
    reading: dict[str, str] = field(default_factory=dict)  # streamed dataset -> how it was read
    copied: int = 0
    source_bytes: int = 0
    stored_bytes: int = 0
    verified: bool | None = None
    verify_seconds: float | None = None
    datasets: tuple = ()  # the write report's per-dataset lines (:class:`~hdmf_zarr_parallel.write.report.DatasetReport`)

    @property
    def streamed_bytes(self) -> int:
        return sum(n for _, n in self.streamed)

    def summary(self) -> str:
        mbps = self.streamed_bytes / self.seconds / 1e6 if self.seconds else 0.0
        lines = [
            f"converted {self.source} -> {self.output} in {self.seconds:.2f} s with engine {self.engine}",
            f"  {len(self.streamed)} dataset(s) streamed through the engine "
            f"({self.streamed_bytes / 1e6:.1f} MB, {mbps:.1f} MB/s overall), {self.copied} small one(s) copied",
            f"  input {self.source_bytes / 1e6:.1f} MB, output {self.stored_bytes / 1e6:.1f} MB",
        ]
        lines += [f"    {d.line()}" for d in self.datasets]
        if self.reading:
            ways = collections.Counter(self.reading.values())
            lines.append("  read by: " + ", ".join(f"{how} ({n})" for how, n in sorted(ways.items())))
        if self.verified is not None:
            lines.append(
                f"  verify: every group, dataset, attribute, reference and link matches the input "
                f"({self.verify_seconds:.2f} s)"
            )
        return "\n".join(lines)


def disk_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder (a store)."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
