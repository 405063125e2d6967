"""``ParallelZarrIO`` and ``NWBParallelZarrIO``: hdmf-zarr's IO classes with a parallel write queue.

The integration is deliberately thin. hdmf-zarr assigns its write queue to the
private attribute ``_ZarrIO__dci_queue`` in ``write()``, ``export()`` and
``write_dataset()``; a property of that name intercepts each assignment and puts
our queue in its place, carrying over hdmf-zarr's ``number_of_jobs``,
``max_threads_per_process`` and ``multiprocessing_context``. Datasets of object
references are stored in one write instead of one per element (``references.py``),
and each object's attributes in one metadata write (``attributes.py``).
Data keeps being written while hdmf-zarr caches the spec and consolidates the metadata.
Everything else is stock hdmf-zarr. ``tests/test_io.py`` fails loudly if upstream renames the attribute.
"""

from __future__ import annotations

import contextlib
from typing import Any

import zarr
from hdmf.build import DatasetBuilder, GroupBuilder
from hdmf.query import HDMFDataset
from hdmf_zarr import NWBZarrIO, ZarrIO
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue
from hdmf_zarr.zarr_utils import is_reference_dtype

from .attributes import recording, store_recorded
from .engines import make_engine
from .options import DEFAULT_GPU_BATCH_BYTES, DEFAULT_MAX_INFLIGHT_BYTES, WriteOptions
from .pipeline import WriteReport
from .preflight import check_memory_bound
from .queue import ParallelDataChunkIteratorQueue
from .references import CollectingGroup, collecting_group


class _ParallelWriteMixin:
    """Adds the parallel-write keyword arguments and swaps in the parallel queue."""

    def __init__(
        self,
        *args: Any,
        engine: str = "auto",
        max_workers: int | None = None,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        progress: bool | dict[str, Any] = False,
        gpu_batch_bytes: int = DEFAULT_GPU_BATCH_BYTES,
        gpu_streams: int = 4,
        gpu_cpu_helpers: int = 0,
        client: Any = None,
        dask_gpu: str = "auto",
        concurrent_reads: bool | None = None,
        read_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.write_options = WriteOptions(
            engine=engine,
            max_workers=max_workers,
            max_inflight_bytes=max_inflight_bytes,
            progress=progress,
            gpu_batch_bytes=gpu_batch_bytes,
            gpu_streams=gpu_streams,
            gpu_cpu_helpers=gpu_cpu_helpers,
            client=client,
            dask_gpu=dask_gpu,
            concurrent_reads=concurrent_reads,
            read_timeout=read_timeout,
        )
        self._engine = make_engine(self.write_options)  # an unusable engine fails here, before any write
        self._parallel_queue: ParallelDataChunkIteratorQueue | None = None
        self._finish_later = False
        super().__init__(*args, **kwargs)

    @property
    def _ZarrIO__dci_queue(self) -> ParallelDataChunkIteratorQueue | None:
        return self._parallel_queue

    @_ZarrIO__dci_queue.setter
    def _ZarrIO__dci_queue(self, queue: ZarrIODataChunkIteratorQueue | None) -> None:
        if queue is None or isinstance(queue, ParallelDataChunkIteratorQueue):
            self._parallel_queue = queue
            return
        options = self.write_options.with_stock_arguments(
            queue.number_of_jobs, queue.max_threads_per_process, queue.multiprocessing_context
        )
        engine = self._engine if options == self.write_options else make_engine(options)
        self._parallel_queue = ParallelDataChunkIteratorQueue(options, engine, finish_later=self._finish_later)

    @property
    def last_write_report(self) -> WriteReport | None:
        """What the most recent queue exhaustion did (engine, bytes, peak bytes in flight)."""
        return self._parallel_queue.last_report if self._parallel_queue is not None else None

    def write(self, *args: Any, **kwargs: Any) -> None:
        """hdmf-zarr's ``write``; by default every DataChunkIterator dataset is written concurrently
        (``exhaust_dci=False``) instead of one dataset after another."""
        kwargs.setdefault("exhaust_dci", False)
        with self._data_until_the_end(kwargs, kwargs["exhaust_dci"]):
            return super().write(*args, **kwargs)

    def export(self, *args: Any, **kwargs: Any) -> None:
        """hdmf-zarr's ``export``, with the same concurrent default as :meth:`write`."""
        write_args = dict(kwargs.get("write_args") or {})
        write_args.setdefault("exhaust_dci", False)
        kwargs["write_args"] = write_args
        with self._data_until_the_end(kwargs, write_args["exhaust_dci"]):
            return super().export(*args, **kwargs)

    def write_builder(self, *args: Any, **kwargs: Any) -> None:
        """hdmf-zarr's ``write_builder`` (``write`` and ``export`` both end here), after refusing a
        dataset whose known chunk or shard cannot fit ``max_inflight_bytes``, before anything of
        the file is written (see :mod:`.preflight`)."""
        builder = args[0] if args else kwargs.get("builder")
        if isinstance(builder, GroupBuilder):
            check_memory_bound(builder, self.write_options.max_inflight_bytes)
        return super().write_builder(*args, **kwargs)

    def write_dataset(self, *args: Any, **kwargs: Any) -> Any:
        """hdmf-zarr's ``write_dataset``; a dataset of object references is stored in one write
        instead of one chunk rewrite per element (see :mod:`.references`)."""
        parent, builder = kwargs.get("parent"), kwargs.get("builder")
        if (
            args
            or not isinstance(parent, zarr.Group)
            or isinstance(parent, CollectingGroup)
            or not _holds_references(builder, kwargs.get("force_data"))
        ):
            return super().write_dataset(*args, **kwargs)
        group = collecting_group(parent)
        dset = super().write_dataset(*args, **{**kwargs, "parent": group})
        group.flush()
        return dset

    def write_attributes(self, *args: Any, **kwargs: Any) -> None:
        """hdmf-zarr's ``write_attributes`` with one metadata write per object instead of one
        per attribute (see :mod:`.attributes`)."""
        obj = args[0] if args else kwargs.get("obj")
        if not isinstance(obj, (zarr.Group, zarr.Array)):
            return super().write_attributes(*args, **kwargs)
        stand_in = recording(obj)
        if args:
            super().write_attributes(stand_in, *args[1:], **kwargs)
        else:
            super().write_attributes(**{**kwargs, "obj": stand_in})
        store_recorded(obj, stand_in)

    @contextlib.contextmanager
    def _data_until_the_end(self, kwargs: dict[str, Any], exhaust_dci: bool):
        """Data keeps being written through hdmf-zarr's whole write, its tail included.

        After exhausting the queue, stock consolidates the metadata, caches the spec and
        consolidates again, all on one thread while the data cores idle. Here the queue is
        waited for only after that tail. Array metadata is final by then, except where a
        sequential iterator grew its dataset: then the metadata is consolidated again, after
        the data. If hdmf-zarr fails meanwhile, the datasets still being written are stopped.
        ``exhaust_dci=True`` (one dataset after another) keeps stock behaviour.
        """
        self._finish_later = not exhaust_dci
        try:
            yield
            report = self._parallel_queue.finish() if self._parallel_queue is not None else None
        except BaseException:
            if self._parallel_queue is not None:
                self._parallel_queue.abort()
            raise
        finally:
            self._finish_later = False
        if report is not None and report.resized and kwargs.get("consolidate_metadata", True):
            zarr.consolidate_metadata(store=self.path)


def _holds_references(builder: Any, force_data: Any) -> bool:
    """Whether hdmf-zarr writes this dataset element by element: references, or containers to refer to."""
    if not isinstance(builder, DatasetBuilder):
        return False
    data = builder.data if force_data is None else force_data
    return is_reference_dtype(builder.dtype) or isinstance(data, HDMFDataset)


class ParallelZarrIO(_ParallelWriteMixin, ZarrIO):
    """``hdmf_zarr.ZarrIO`` whose DataChunkIterator writes run in parallel."""


class NWBParallelZarrIO(_ParallelWriteMixin, NWBZarrIO):
    """``hdmf_zarr.NWBZarrIO`` whose DataChunkIterator writes run in parallel."""
