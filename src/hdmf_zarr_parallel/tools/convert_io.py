"""The IO class ``convert`` exports with: :class:`ConvertIO`, an ``NWBParallelZarrIO`` whose
export streams large numeric datasets through the engines.

The hook is :meth:`ConvertIO.write_dataset`: hdmf-zarr's export calls it once per dataset
builder, with the builder's data still an ``h5py.Dataset`` (or a zarr v2 array, handed to
:func:`.zarr_v2.write_v2_dataset`). For a streamable HDF5 dataset (:func:`.convert_plan.is_streamable`)
it swaps that data for a ``ZarrDataIO`` around an :class:`~.h5direct.H5DatasetIterator`, with the
settings stock export infers (``ZarrDataIO.from_h5py_dataset``: HDF5 chunks, fill value,
shuffle/gzip mapped to zarr codecs) unless the options or a ``--layout`` preset
(:func:`.convert_plan.stream_codecs`) ask for others, and afterwards writes the
``_DTYPE`` attribute exactly as stock's copy does. Other datasets take hdmf-zarr's own path, with
the options' codec where they are numeric.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from hdmf_zarr.utils import ZarrDataIO
from zarr.abc.codec import ArrayArrayCodec, BytesBytesCodec

from ..io import NWBParallelZarrIO
from . import zarr_v2
from .convert_plan import ConvertOptions, Layout, is_streamable, make_compressors, plan_layout, stream_codecs
from .h5direct import H5DatasetIterator
from .reopening import NamedDatasetIterator


class ConvertIO(NWBParallelZarrIO):
    """NWBParallelZarrIO whose export streams large numeric HDF5 (or Zarr v2) datasets (see the module doc).

    What it streamed and copied is kept for the conversion report: ``streamed`` (name, bytes),
    ``reading`` (name -> how the workers read it), ``copied`` (how many datasets hdmf-zarr copied).
    """

    def __init__(self, *args: Any, convert_options: ConvertOptions, source_path: str, **kwargs: Any) -> None:
        self.convert_options = convert_options
        self.source_path = source_path
        self.streamed: list[tuple[str, int]] = []  # (name, bytes)
        self.reading: dict[str, str] = {}  # name -> how the workers read it
        self.copied = 0
        self._iterators: list[NamedDatasetIterator] = []
        super().__init__(*args, **kwargs)

    def write_dataset(self, **kwargs: Any):
        builder = kwargs.get("builder")
        data = kwargs.get("force_data")
        data = builder.data if data is None else data
        if zarr_v2.is_v2_array(data):  # a Zarr v2 input (see zarr_v2.py)
            return zarr_v2.write_v2_dataset(self, kwargs, super().write_dataset)
        if not ZarrDataIO.is_h5py_dataset(data):
            return super().write_dataset(**kwargs)
        options = self.convert_options
        codecs = ZarrDataIO.hdf5_to_zarr_filters(data)
        source_compressors = [c for c in codecs if isinstance(c, BytesBytesCodec)] or None
        filters = [c for c in codecs if isinstance(c, ArrayArrayCodec)] or None
        compressors = source_compressors
        if options.codec is not None and data.dtype.kind in "biuf":
            compressors = make_compressors(options.codec, options.level)
        fillvalue = data.fillvalue
        if isinstance(fillvalue, bytes):
            fillvalue = fillvalue.decode("utf-8")
        if not is_streamable(data, options) or not self._same_dtype(builder, data):
            self.copied += 1
            kwargs["force_data"] = ZarrDataIO(
                data=data, compressors=compressors, filters=filters, fillvalue=fillvalue, chunks=data.chunks
            )
            return super().write_dataset(**kwargs)
        layout = plan_layout(data, options)
        compressors, filters = stream_codecs(options, source_compressors, filters)
        iterator = self.open_iterator(H5DatasetIterator, data, layout)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "shards without chunks": we always give both
            kwargs["force_data"] = ZarrDataIO(
                data=iterator,
                chunks=layout.chunks,
                shards=layout.shards,
                compressors=compressors,
                filters=filters,
                fillvalue=fillvalue,
            )
        dset = super().write_dataset(**kwargs)
        if dset is not None:
            dset.attrs["_DTYPE"] = _stock_type_name(data.dtype)
        self.record_streamed(data, iterator)
        return dset

    def open_iterator(self, kind: type[NamedDatasetIterator], data: Any, layout: Layout) -> NamedDatasetIterator:
        """An iterator of ``kind`` over the source dataset ``data`` in ``layout``'s chunks and
        buffers; :meth:`close_iterators` closes it after the export."""
        iterator = kind(
            self.source_path,
            data.name,
            dataset=data,
            chunk_shape=tuple(min(c, s) for c, s in zip(layout.chunks, data.shape, strict=True)),
            buffer_shape=layout.buffer_shape,
        )
        self._iterators.append(iterator)
        return iterator

    def record_streamed(self, data: Any, iterator: NamedDatasetIterator) -> None:
        """Note for the report that ``data`` went through the engines, and how it was read."""
        self.streamed.append((data.name, int(data.size * np.dtype(data.dtype).itemsize)))
        self.reading[data.name] = iterator.reading

    @staticmethod
    def _same_dtype(builder: Any, data: Any) -> bool:
        """Stream only where stock would store the HDF5 dtype unchanged."""
        wanted = builder.dtype
        if wanted is None:
            return True
        try:
            return np.dtype(wanted) == data.dtype
        except TypeError:
            return False

    def close_iterators(self) -> None:
        for iterator in self._iterators:
            iterator.close()
        self._iterators.clear()


def _stock_type_name(dtype: np.dtype) -> str:
    """The ``_DTYPE`` attribute stock hdmf-zarr writes for a copied numeric array."""
    return np.dtype(dtype).type.__name__
