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


class IncompleteStoreError(RuntimeError):
    """The store's write did not finish: it failed, was interrupted or killed, or is still running.

    Until a write has stored all of its data, the store's root ``zarr.json`` is a placeholder
    that every Zarr v3 reader must refuse (see :mod:`hdmf_zarr_parallel.metadata.completion`); our IO
    classes raise this error for it, naming the store.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        super().__init__(
            f"{store} is incomplete: its write failed, was interrupted or is still running, so some of its "
            "data was never stored (a store is marked complete only after its last chunk is stored); "
            "write it again"
        )

    def __reduce__(self):
        return (type(self), (self.store,))
