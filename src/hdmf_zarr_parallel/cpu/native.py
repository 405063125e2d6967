"""Chunks and shards compressed and written to their files in one call that holds no GIL (numba, optional).

A worker writing zstd chunks one by one takes the GIL back several times per chunk (the codec
call, then ``open``, ``write``, ``close`` and the rename of its file; per inner chunk of a
shard, the codec call), and every return costs it tens of microseconds of Python run with cold
caches (benchmarks/RESULTS.md, "GIL budget"). With numba installed (the ``native`` extra),
:class:`NativeUnitFiles` takes a block of write units laid out as rows (one row per chunk, or
per inner chunk of a shard) and, in one compiled loop that releases the GIL, compresses each
unit's stored rows with numcodecs' own libzstd (the per-thread context and the two parameters
of :mod:`.zstd_frames`, so the very bytes numcodecs gives), builds a shard's index and its
CRC32C (``google_crc32c``'s library, as zarr's ``crc32c`` codec uses), and writes the unit to
a temporary file that is then renamed to its key: one return per block. The unit's file is
laid out as :class:`UnitLayout` says (the inner chunks in zarr's write order, the index where
zarr puts it: :mod:`~hdmf_zarr_parallel.shard_layout`), so the files are zarr's, byte for byte.
On the first failure the loop stops and removes that unit's temporary file; the caller writes
that unit and the rest through the Python path, which raises what the OS says (a full disk
keeps its errno) and names the key.

Units already encoded (by the GPU engine's lanes, or by codecs the loop does not run) go the
same way once the loop runs in the process: :class:`NativeFiles` writes a sink's batch of files
(``write/sink.py``, ``LocalFileSink.put_many``) in one GIL-free call, with the same temporary
names, renames and fallback.

numba's import and the loop's start-up (loaded from numba's on-disk cache; compiled, once per
machine, by the first process: :mod:`.native_kernel`) hold the GIL for a while once per process,
which only a large write earns back. So a process starts it only for a dataset of at least
:data:`NATIVE_MIN_BYTES`, or when :func:`prepare` is called (a notebook or a conversion of many
files may call it once, at its start); once started, every dataset it suits uses it.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np

from .zstd_frames import ZstdFrames, library, zstd_frames

#: the smallest dataset that starts the loop in a process that has not started it yet
NATIVE_MIN_BYTES = 4 << 30

_INDEX_MODES = {None: 0, "start": 1, "end": 2}  # the kernel's codes for UnitLayout.index


@dataclass(frozen=True)
class UnitLayout:
    """How a write unit's rows make its file: ``rows`` rows per unit, compressed one after another
    in ``order`` (positions among the unit's rows); a shard index (``(offset, nbytes)`` per row, in
    row order) at the ``index`` end of the file, followed by its CRC32C when ``crc32c``."""

    rows: int
    order: np.ndarray = field(repr=False)
    index: Literal["start", "end"] | None = None
    crc32c: bool = False

    @classmethod
    def chunk(cls) -> UnitLayout:
        """An unsharded chunk: one row, its frame alone."""
        return cls(1, np.zeros(1, np.int64))

    @property
    def index_nbytes(self) -> int:
        return 0 if self.index is None else 16 * self.rows + (4 if self.crc32c else 0)


_compile_lock = threading.Lock()


def _kernel() -> ModuleType | None:
    """The compiled loops (compiled, or loaded from numba's cache, once per process), or ``None``
    without numba, the two C libraries or a little-endian POSIX libc."""
    with _compile_lock:
        return _compiled()


@functools.cache
def _compiled() -> ModuleType | None:
    if os.name != "posix" or sys.byteorder != "little" or library() is None:
        return None
    try:
        from . import native_kernel
    except ImportError:  # no numba, or a C library without the symbols
        return None
    return native_kernel


def _started(nbytes: int) -> ModuleType | None:
    """The loops for a dataset of ``nbytes``: started for a large one, or already started in this process."""
    if nbytes < NATIVE_MIN_BYTES and not running():
        return None
    return _kernel()


def running() -> bool:
    """Whether this process has started the loops (without starting them)."""
    return _compiled.cache_info().currsize > 0 and _compiled() is not None


def _names(tmps: Sequence[str], paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The temporary names, then the keys' paths, as one buffer of NUL-terminated file names and their offsets."""
    encoded = [os.fsencode(name) for name in (*tmps, *paths)]
    offsets = np.zeros(len(encoded), np.int64)
    np.cumsum([len(name) + 1 for name in encoded[:-1]], out=offsets[1:])
    names = np.frombuffer(bytearray(b"\0".join(encoded) + b"\0"), np.uint8)  # writable: the signature's type
    return names, offsets


class NativeFiles:
    """Writes a batch of encoded units (whole files) to their keys in one GIL-free call."""

    def __init__(self, kernel: ModuleType) -> None:
        self._write_files = kernel.write_files

    @classmethod
    def make(cls) -> NativeFiles | None:
        """The writer, where this process runs the loops already (a sink never starts them: a large
        array written in a few places must not pay for numba's start-up); else ``None``."""
        return cls(_kernel()) if running() else None

    def write(self, blobs: Sequence, tmps: list[str], paths: list[str]) -> int:
        """Each blob (any contiguous buffer) written to ``tmps[k]``, then renamed to ``paths[k]``;
        returns how many were written (all, or those before the first that failed)."""
        if not blobs:
            return 0
        views = [np.frombuffer(blob, np.uint8) for blob in blobs]  # kept alive through the call
        data = np.fromiter((view.ctypes.data for view in views), np.uintp, len(views))
        sizes = np.fromiter((view.nbytes for view in views), np.int64, len(views))
        return int(self._write_files(data, sizes, *_names(tmps, paths)))


class NativeRows:
    """Compresses a batch of rows with zstd in one GIL-free call, each frame in a fixed-size slot of
    one buffer: what nvCOMP's batched encode does on the device (the GPU engine's host lane uses it
    as that one call's stand-in)."""

    def __init__(self, frames: ZstdFrames, kernel: ModuleType) -> None:
        self._frames = frames
        self._compress_rows = kernel.compress_rows

    @classmethod
    def make(cls, level: int) -> NativeRows | None:
        """The compressor for numcodecs' ``Zstd(level)``, where this process runs the loops already."""
        if not running():
            return None
        frames = zstd_frames(level)
        return None if frames is None else cls(frames, _kernel())

    def compress(self, matrix: np.ndarray, picked: np.ndarray) -> list[memoryview]:
        """Rows ``picked`` of a C-contiguous ``uint8`` matrix as zstd frames (numcodecs' bytes), views
        into one buffer."""
        slot = self._frames.bound(matrix.shape[1])
        out = np.empty(len(picked) * slot, np.uint8)
        sizes = np.zeros(len(picked), np.int64)
        done = self._compress_rows(self._frames.context(), matrix, np.asarray(picked, np.int64), out, slot, sizes)
        if done < len(picked):
            raise RuntimeError(f"Zstd compression error on row {int(picked[done])} of the batch")
        view = memoryview(out)
        return [view[k * slot : k * slot + n] for k, n in enumerate(sizes.tolist())]


def prepare() -> bool:
    """Import numba and compile the loop now (a program may call this at its start, so that its
    first large write does not pay for it); whether the loop can be used in this process."""
    return _kernel() is not None


class NativeUnitFiles:
    """Writes blocks of zstd chunks or shards to their files, one GIL-free call per block."""

    def __init__(self, frames: ZstdFrames, layout: UnitLayout, kernel: Callable) -> None:
        self._frames = frames
        self._layout = layout
        self._kernel = kernel

    @classmethod
    def make(cls, frames: ZstdFrames | None, layout: UnitLayout, nbytes: int) -> NativeUnitFiles | None:
        """The writer for a dataset of ``nbytes`` whose units' rows are compressed by zstd alone, or ``None``."""
        kernel = None if frames is None else _started(nbytes)
        return None if kernel is None else cls(frames, layout, kernel.write_units)

    def write(
        self, matrix: np.ndarray, skip: np.ndarray | None, todo: Sequence[int], tmps: list[str], paths: list[str]
    ) -> int:
        """Units ``todo`` of a C-contiguous ``uint8`` matrix (the stored bytes of one chunk or inner
        chunk per row, :attr:`UnitLayout.rows` rows per unit), their rows but those ``skip`` marks
        compressed and written to ``tmps[k]``, then renamed to ``paths[k]``; returns how many
        units were written (all of them, or those before the first that failed)."""
        if not len(todo):
            return 0
        layout = self._layout
        names, offsets = _names(tmps, paths)
        keep = np.ones(len(matrix), np.uint8) if skip is None else np.logical_not(skip).view(np.uint8)
        out = np.empty(layout.rows * self._frames.bound(matrix.shape[1]), np.uint8)
        index = np.empty(layout.index_nbytes, np.uint8)
        args = (matrix, keep, layout.rows, layout.order, _INDEX_MODES[layout.index], np.asarray(todo, np.int64))
        return int(self._kernel(self._frames.context(), *args, out, index, names, offsets))
