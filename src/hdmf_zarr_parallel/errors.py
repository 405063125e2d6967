"""Exceptions raised by the parallel writer."""

from __future__ import annotations


class ChunkWriteError(RuntimeError):
    """A stage (read, encode or store) failed for one chunk of one dataset.

    The original exception is chained as ``__cause__``; ``dataset`` and ``chunk``
    say where the write stopped so a conversion can be diagnosed without a debugger.
    """

    def __init__(self, dataset: str, chunk: tuple[int, ...] | None, stage: str, detail: str) -> None:
        self.dataset = dataset
        self.chunk = chunk
        self.stage = stage
        self.detail = detail
        where = f"chunk {chunk}" if chunk is not None else "a region"
        super().__init__(f"writing dataset '{dataset}' failed at {where} while {stage}: {detail}")

    def __reduce__(self):  # picklable across process boundaries
        return (type(self), (self.dataset, self.chunk, self.stage, self.detail))


class ConvertError(ValueError):
    """A problem with a conversion's inputs, options or output, reported as one line."""
