"""Parallel (CPU pool or GPU) writes of HDMF / NWB DataChunkIterator data to Zarr v3."""

from .concurrent_readers import register_concurrent_reader, unregister_concurrent_reader
from .engines import choose_auto_engine
from .errors import ChunkWriteError, IncompleteStoreError
from .io import NWBParallelZarrIO, ParallelZarrIO
from .options import WriteOptions
from .write.report import WriteReport

__all__ = [
    "ChunkWriteError",
    "IncompleteStoreError",
    "NWBParallelZarrIO",
    "ParallelZarrIO",
    "WriteOptions",
    "WriteReport",
    "choose_auto_engine",
    "register_concurrent_reader",
    "unregister_concurrent_reader",
]
__version__ = "0.1.0"
