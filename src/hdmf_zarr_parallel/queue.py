"""The DataChunkIterator queue hdmf-zarr calls; it hands the queued datasets to the pipeline."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue

from .dataset import DatasetWriter
from .engines import Engine, make_engine
from .options import WriteOptions
from .pipeline import WriteReport, write_datasets

logger = logging.getLogger(__name__)


def writable_in_parallel(array) -> bool:
    """Numeric and boolean arrays go through the pipeline; strings and compound types stay stock."""
    return np.dtype(array.dtype).kind in "biufcmM"


class ParallelDataChunkIteratorQueue(ZarrIODataChunkIteratorQueue):
    """A drop-in for hdmf-zarr's queue that writes everything queued concurrently."""

    def __init__(self, options: WriteOptions, engine: Engine | None = None) -> None:
        super().__init__(
            number_of_jobs=1,
            max_threads_per_process=options.max_threads_per_process,
            multiprocessing_context=options.mp_context,
        )
        self.options = options
        self.engine = engine or make_engine(options)
        self.last_report: WriteReport | None = None

    def _options_for(self, items) -> WriteOptions:
        """Iterators built with ``display_progress=True`` get one bar for the whole write, as stock shows."""
        if self.options.progress or not any(getattr(it, "display_progress", False) for _, it in items):
            return self.options
        return replace(self.options, progress={"desc": f"Writing Zarr datasets with {self.options.workers} jobs"})

    def exhaust_queue(self) -> None:
        items = list(self)
        self.clear()
        stock = [(dset, it) for dset, it in items if not writable_in_parallel(dset)]
        writers = [DatasetWriter(dset, it) for dset, it in items if writable_in_parallel(dset)]
        if writers:
            self.last_report = write_datasets(writers, self.engine, self._options_for(items))
            logger.debug("wrote %s", self.last_report)
        for dset, iterator in stock:  # hdmf-zarr's own one-buffer-at-a-time path
            while ZarrIODataChunkIteratorQueue.__write_chunk__(dset, iterator):
                pass
