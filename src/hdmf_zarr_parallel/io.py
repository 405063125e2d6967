"""``ParallelZarrIO`` and ``NWBParallelZarrIO``: hdmf-zarr's IO classes with a parallel write queue.

The integration is deliberately thin. hdmf-zarr assigns its write queue to a private
attribute in ``write()``, ``export()`` and ``write_dataset()``; a property of that name
(:func:`~._zarr.intercept_dci_queue`) intercepts each assignment and puts our queue in its
place, carrying over hdmf-zarr's ``number_of_jobs``, ``max_threads_per_process`` and
``multiprocessing_context``. Datasets of object references are stored in one write instead
of one per element (:mod:`.metadata.references`), and each object's attributes in one
metadata write (:mod:`.metadata.attributes`). Data keeps being written while hdmf-zarr
caches the spec and consolidates the metadata, yet the store opens as complete only once
everything is stored: the root ``zarr.json`` is a placeholder every reader refuses until
then (:mod:`.metadata.completion`). One IO object runs one write at a time. Everything else
is stock hdmf-zarr; every hdmf-zarr internal this relies on is listed in :mod:`._zarr`.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import fields
from typing import Any

import zarr
from hdmf.build import DatasetBuilder, GroupBuilder
from hdmf.query import HDMFDataset
from hdmf_zarr import NWBZarrIO, ZarrIO
from hdmf_zarr.utils import ZarrIODataChunkIteratorQueue
from hdmf_zarr.zarr_utils import is_reference_dtype

from ._zarr import intercept_dci_queue
from .engines import make_engine
from .metadata.attributes import recording, store_recorded
from .metadata.completion import RootCommit, refusing_incomplete
from .metadata.references import CollectingGroup, collecting_group
from .options import WriteOptions
from .write.preflight import check_memory_bound
from .write.queue import ParallelDataChunkIteratorQueue
from .write.report import WriteReport


class _ParallelWriteMixin:
    """Adds the parallel-write keyword arguments and swaps in the parallel queue.

    The keyword arguments are the fields of :class:`~.options.WriteOptions` (documented there),
    taken out of ``kwargs`` before hdmf-zarr's own ``__init__`` sees the rest; a keyword neither
    knows is hdmf-zarr's ``TypeError``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = {name: kwargs.pop(name) for name in WriteOptions.keywords() if name in kwargs}
        self.write_options = WriteOptions(**settings)
        self._engine = make_engine(self.write_options)  # an unusable engine fails here, before any write
        self._parallel_queue: ParallelDataChunkIteratorQueue | None = None
        self._finish_later = False
        self._writing = threading.Lock()  # held by the one write() or export() in progress
        self._writer_thread: int | None = None
        self._commit: RootCommit | None = None
        self._committing = False  # inside write()/export(): write_builder marks the store incomplete
        super().__init__(*args, **kwargs)

    @classmethod
    def configured(cls, **options: Any) -> type:
        """A subclass whose write options default to ``options``, for callers that take an IO class.

        neuroconv, for example, is handed a class (``BACKEND_NWB_IO["zarr"] = ...``) and builds,
        reads and appends with it; ``functools.partial`` is not a class and breaks there. The
        subclass is a real subclass (``issubclass(..., NWBZarrIO)``, ``can_read`` and every other
        classmethod work), its options are checked now, and keyword arguments given when an
        object is made still win.
        """
        keywords = WriteOptions.keywords()
        unknown = sorted(set(options) - set(keywords))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.configured() got unknown write option(s) {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(keywords))}"
            )
        WriteOptions(**{**getattr(cls, "preset_options", {}), **options})  # bad values fail here
        presets = {**getattr(cls, "preset_options", {}), **options}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super(configured_class, self).__init__(*args, **{**presets, **kwargs})

        settings = ", ".join(f"{k}={v!r}" for k, v in presets.items())
        configured_class = type(
            cls.__name__,
            (cls,),
            {
                "__init__": __init__,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": f"{cls.__doc__}\n\nPreset write options: {settings or 'none'}.",
                "preset_options": dict(presets),
            },
        )
        return configured_class

    def _queue(self) -> ParallelDataChunkIteratorQueue | None:
        """The write queue hdmf-zarr uses: always ours (read as ``self._ZarrIO__dci_queue``)."""
        return self._parallel_queue

    def _take_queue(self, queue: ZarrIODataChunkIteratorQueue | None) -> None:
        """hdmf-zarr assigned its queue (``self.__dci_queue = ...``): put ours in its place."""
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
            return self._stock_export(*args, **kwargs)

    def _stock_export(self, *args: Any, **kwargs: Any) -> None:
        return super().export(*args, **kwargs)

    def write_builder(self, *args: Any, **kwargs: Any) -> None:
        """hdmf-zarr's ``write_builder`` (``write`` and ``export`` both end here). It first refuses a
        dataset whose known chunk or shard cannot fit ``max_inflight_bytes`` (see :mod:`.preflight`),
        then, inside :meth:`write`/:meth:`export`, marks the store incomplete: arguments, the build
        and the memory bound are checked by then, so a refused call leaves the store as it was."""
        self._refuse_other_threads()
        builder = args[0] if args else kwargs.get("builder")
        if isinstance(builder, GroupBuilder):
            check_memory_bound(builder, self.write_options.max_inflight_bytes)
        if self._committing and self._commit is None and RootCommit.applies_to(self._file):
            commit = RootCommit(self._file)
            commit.begin()
            self._commit = commit
        return super().write_builder(*args, **kwargs)

    def write_dataset(self, *args: Any, **kwargs: Any) -> Any:
        """hdmf-zarr's ``write_dataset``; a dataset of object references is stored in one write
        instead of one chunk rewrite per element (see :mod:`.references`)."""
        self._refuse_other_threads()
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
        """Data keeps being written through hdmf-zarr's whole write, its tail included, and the
        store is marked complete only once all of it is stored.

        After exhausting the queue, stock consolidates the metadata, caches the spec and
        consolidates again, all on one thread while the data cores idle. Here the queue is
        waited for only after that tail. Stock's consolidations are switched off and done by
        the :class:`~.completion.RootCommit` instead, at the point of stock's last one: zarr's
        own consolidation, whose root document is held back with the root's attributes and
        stored as the very last write, after the data. Array metadata is final by then, except
        where a sequential iterator grew its dataset: then it is consolidated again after the
        data. If anything fails, the datasets still being written are stopped and the store
        keeps its placeholder root, which every reader refuses. ``exhaust_dci=True`` (one
        dataset after another) keeps stock's order of data and metadata.
        """
        if not self._writing.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self).__name__} for '{self.source}' is already writing: write() or export() is running "
                "on another thread (or was re-entered). One IO object writes one file, one call at a time; "
                "wait for that call to return, or use one IO object per file"
            )
        try:
            self._writer_thread = threading.get_ident()
            consolidate = kwargs.pop("consolidate_metadata", True)
            kwargs["consolidate_metadata"] = False  # the commit consolidates, and stores the root last
            self._finish_later = not exhaust_dci
            self._committing = self.mode not in ("r", "r-")
            yield
            commit = self._commit
            if commit is not None and consolidate:
                commit.consolidate()  # while data may still be written
            report = self._parallel_queue.finish() if self._parallel_queue is not None else None
            if commit is not None:
                if report is not None and report.resized and consolidate:
                    commit.consolidate()
                commit.commit()
            elif report is not None and report.resized and consolidate:
                zarr.consolidate_metadata(store=self.path)
        except BaseException:
            if self._parallel_queue is not None:
                self._parallel_queue.abort()
            raise
        finally:
            if self._commit is not None:
                self._commit.release()
            self._commit = None
            self._committing = False
            self._finish_later = False
            self._writer_thread = None
            self._writing.release()

    def _refuse_other_threads(self) -> None:
        writer = self._writer_thread
        if writer is not None and writer != threading.get_ident():
            raise RuntimeError(
                f"{type(self).__name__} for '{self.source}' is already writing on another thread; "
                "one IO object writes one file, one call at a time"
            )

    # -- reading: a store whose write did not finish is refused by name -------------------
    def _open_file(self, store: Any, mode: str, storage_options: dict | None = None) -> Any:
        with refusing_incomplete(store):
            return super()._open_file(store, mode, storage_options)

    def _open_file_consolidated(self, store: Any, mode: str, storage_options: dict | None = None) -> Any:
        with refusing_incomplete(store):
            return super()._open_file_consolidated(store, mode, storage_options)

    @classmethod
    def _open_for_namespaces(cls, store: Any) -> Any:
        with refusing_incomplete(store):
            return super()._open_for_namespaces(store)


def _signature() -> inspect.Signature:
    """``(*args, <every WriteOptions keyword>=default, **kwargs)``, for help() and editors."""
    defaults = {f.name: f.default for f in fields(WriteOptions)}
    return inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
            inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
            *(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name])
                for name in WriteOptions.keywords()
            ),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    )


_ParallelWriteMixin.__init__.__signature__ = _signature()
intercept_dci_queue(_ParallelWriteMixin, _ParallelWriteMixin._queue, _ParallelWriteMixin._take_queue)


def _holds_references(builder: Any, force_data: Any) -> bool:
    """Whether hdmf-zarr writes this dataset element by element: references, or containers to refer to."""
    if not isinstance(builder, DatasetBuilder):
        return False
    data = builder.data if force_data is None else force_data
    return is_reference_dtype(builder.dtype) or isinstance(data, HDMFDataset)


class ParallelZarrIO(_ParallelWriteMixin, ZarrIO):
    """``hdmf_zarr.ZarrIO`` whose DataChunkIterator writes run in parallel.

    Takes hdmf-zarr's arguments, and every :class:`~.options.WriteOptions` keyword
    (``engine``, ``max_workers``, ``max_inflight_bytes``, ...; documented there)."""


class NWBParallelZarrIO(_ParallelWriteMixin, NWBZarrIO):
    """``hdmf_zarr.NWBZarrIO`` whose DataChunkIterator writes run in parallel.

    Takes hdmf-zarr's arguments, and every :class:`~.options.WriteOptions` keyword
    (``engine``, ``max_workers``, ``max_inflight_bytes``, ...; documented there)."""

    def _stock_export(self, *args: Any, **kwargs: Any) -> None:
        # NWBZarrIO.export takes no consolidate_metadata: do its one step (the nwbfile is the
        # container to export), then ZarrIO.export, which does
        kwargs["container"] = kwargs.pop("nwbfile", None)
        return ZarrIO.export(self, *args, **kwargs)
