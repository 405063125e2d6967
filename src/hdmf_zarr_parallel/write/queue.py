"""The DataChunkIterator queue hdmf-zarr calls; it hands the queued datasets to the pipeline.

A numeric dataset starts writing the moment hdmf-zarr queues it, so its chunks are read,
compressed and stored while hdmf-zarr goes on creating the file's other groups, datasets
and attributes; ``exhaust_queue()`` then only waits for what is still in flight. With
``finish_later`` it does not even wait: the IO class calls :meth:`finish` once hdmf-zarr's
own tail (the spec cache) is written too.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue

from .._zarr import write_stock_buffer
from ..engines import Engine, make_engine
from ..options import WriteOptions
from .dataset import DatasetWrite
from .pipeline import PipelineRun
from .report import WriteReport

logger = logging.getLogger(__name__)


def writable_in_parallel(array) -> bool:
    """Numeric and boolean arrays go through the pipeline; strings and compound types stay stock."""
    return np.dtype(array.dtype).kind in "biufcmM"


class ParallelDataChunkIteratorQueue(ZarrIODataChunkIteratorQueue):
    """A drop-in for hdmf-zarr's queue that writes everything queued concurrently."""

    def __init__(self, options: WriteOptions, engine: Engine | None = None, finish_later: bool = False) -> None:
        super().__init__(
            number_of_jobs=1,
            max_threads_per_process=options.max_threads_per_process,
            multiprocessing_context=options.mp_context,
        )
        self.options = options
        self.engine = engine or make_engine(options)
        self.finish_later = finish_later
        self.last_report: WriteReport | None = None
        self._run: PipelineRun | None = None

    def _options_for(self, iterator) -> WriteOptions:
        """An iterator built with ``display_progress=True`` gets one bar for the whole write, as stock shows."""
        if self.options.progress or not getattr(iterator, "display_progress", False):
            return self.options
        return replace(self.options, progress={"desc": f"Writing Zarr datasets with {self.options.workers} jobs"})

    def append(self, dataset, data) -> None:
        if not writable_in_parallel(dataset):
            super().append(dataset, data)  # hdmf-zarr's own path, at exhaust time
            return
        if self._run is None:
            self._run = PipelineRun(self.engine, self._options_for(data))
        self._run.add(DatasetWrite(dataset, data, self.options.concurrent_reads))

    def exhaust_queue(self) -> None:
        stock = list(self)
        self.clear()
        if not self.finish_later:
            self.finish()
        for dset, iterator in stock:  # hdmf-zarr's own one-buffer-at-a-time path
            while write_stock_buffer(dset, iterator):
                pass

    def finish(self) -> WriteReport | None:
        """Wait for every dataset still being written; re-raises the first failure."""
        run, self._run = self._run, None
        if run is None:
            return None
        self.last_report = run.finish()
        logger.debug("wrote %s", self.last_report)
        return self.last_report

    def abort(self) -> None:
        """hdmf-zarr failed mid-write: stop every dataset still being written."""
        self.clear()
        run, self._run = self._run, None
        if run is not None:
            run.abort()
