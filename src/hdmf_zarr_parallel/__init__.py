"""Parallel (CPU pool or GPU) writes of HDMF / NWB DataChunkIterator data to Zarr v3."""

from .engines import choose_auto_engine
from .errors import ChunkWriteError
from .io import NWBParallelZarrIO, ParallelZarrIO
from .options import WriteOptions
from .pipeline import WriteReport

__all__ = [
    "ChunkWriteError",
    "NWBParallelZarrIO",
    "ParallelZarrIO",
    "WriteOptions",
    "WriteReport",
    "choose_auto_engine",
]
__version__ = "0.1.0"
