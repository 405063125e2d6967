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

numba's import and the loop's compilation cost each process 3–4 s, once, with the GIL held:
more GIL time than the loop saves on a write of less than ~20 GB. So a process compiles it
only for a dataset of at least :data:`NATIVE_MIN_BYTES`, or when :func:`prepare` is called (a
notebook or a conversion of many files may call it once, at its start); once compiled, every
dataset it suits uses it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..shard_layout import EMPTY
from .zstd_frames import ZstdFrames, library

#: the smallest dataset that compiles the loop in a process that has not compiled it yet
NATIVE_MIN_BYTES = 16 << 30

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
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


def _crc32c_library() -> ctypes.CDLL | None:
    """``google_crc32c``'s C library (loaded by its extension module), whose ``crc32c_extend`` zarr's codec calls."""
    try:
        import google_crc32c._crc32c as extension

        lib = ctypes.CDLL(extension.__file__)
        extend = lib.crc32c_extend
    except (ImportError, OSError, AttributeError):
        return None
    extend.argtypes, extend.restype = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_uint32
    return lib


_compile_lock = threading.Lock()


def _kernel() -> Callable | None:
    """The compiled loop (compiled once per process), or ``None`` without numba, the two C
    libraries or a little-endian POSIX libc."""
    with _compile_lock:
        return _compiled()


@functools.cache
def _compiled() -> Callable | None:
    lib, crc = library(), _crc32c_library()
    if lib is None or crc is None or os.name != "posix" or sys.byteorder != "little":
        return None
    try:
        from numba import njit
    except ImportError:
        return None
    libc = ctypes.CDLL(None)
    pointer, size = ctypes.c_void_p, ctypes.c_size_t
    compress2, crc_extend = lib.ZSTD_compress2, crc.crc32c_extend
    c_open, c_write, c_close = libc.open, libc.write, libc.close
    c_rename, c_unlink = libc.rename, libc.unlink
    c_open.argtypes, c_open.restype = [pointer, ctypes.c_int, ctypes.c_int], ctypes.c_int
    c_write.argtypes, c_write.restype = [ctypes.c_int, pointer, size], ctypes.c_ssize_t
    c_close.argtypes, c_close.restype = [ctypes.c_int], ctypes.c_int
    c_rename.argtypes, c_rename.restype = [pointer, pointer], ctypes.c_int
    c_unlink.argtypes, c_unlink.restype = [pointer], ctypes.c_int
    flags, empty = _CREATE, np.uint64(EMPTY)

    @njit("boolean(intc, uintp, intp)", nogil=True)
    def write_all(fd, data, nbytes):  # pragma: no cover - compiled
        written = 0
        while written < nbytes:
            step = c_write(fd, data + written, nbytes - written)
            if step <= 0:
                return False
            written += step
        return True

    signature = (
        "intp(uintp, uint8[:, ::1], uint8[::1], intp, int64[::1], intp, int64[::1], uint8[::1], uint8[::1],"
        " uint8[::1], int64[::1])"
    )

    @njit(signature, nogil=True)  # compiled here, once: one signature, no compile in a worker's call
    def write_units(context, matrix, keep, per_unit, order, at, todo, out, index, names, offsets):  # pragma: no cover
        """Units ``todo`` (rows ``u * per_unit`` on) of ``matrix``: their kept rows compressed into
        ``out`` in ``order``, the shard ``index`` (``at`` 1: the file's start, 2: its end; its last
        4 bytes the CRC32C of the entries when it has room for them) filled, and the whole written
        to each unit's temporary name (``offsets[k]`` into ``names``), renamed to its key
        (``offsets[len(todo) + k]``). Returns how many were written; the one that failed (if
        any) leaves no temporary file."""
        row_bytes, capacity = matrix.shape[1], out.shape[0]
        source, target, text = matrix.ctypes.data, out.ctypes.data, names.ctypes.data
        entries_bytes = 16 * per_unit if at else 0
        entries = index[:entries_bytes].view(np.uint64)
        head = index.shape[0] if at == 1 else 0
        count = todo.shape[0]
        for k in range(count):
            first = todo[k] * per_unit
            body = 0
            for j in range(per_unit):
                i = order[j]
                if at:
                    entries[2 * i] = empty
                    entries[2 * i + 1] = empty
                if not keep[first + i]:
                    continue
                frame = compress2(context, target + body, capacity - body, source + (first + i) * row_bytes, row_bytes)
                if frame > capacity - body:  # one of libzstd's error codes
                    return k
                if at:
                    entries[2 * i] = head + body
                    entries[2 * i + 1] = frame
                body += frame
            if index.shape[0] > entries_bytes:
                value = crc_extend(0, index.ctypes.data, entries_bytes)
                for b in range(4):
                    index[entries_bytes + b] = (value >> (8 * b)) & 0xFF
            tmp = text + offsets[k]
            fd = c_open(tmp, flags, 0o666)
            if fd < 0:
                return k
            ok = at != 1 or write_all(fd, index.ctypes.data, index.shape[0])
            ok = ok and write_all(fd, target, body)
            ok = ok and (at != 2 or write_all(fd, index.ctypes.data, index.shape[0]))
            if c_close(fd) != 0 or not ok or c_rename(tmp, text + offsets[count + k]) != 0:
                c_unlink(tmp)
                return k
        return count

    return write_units


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
        if frames is None or (nbytes < NATIVE_MIN_BYTES and _compiled.cache_info().currsize == 0):
            return None
        kernel = _kernel()
        return None if kernel is None else cls(frames, layout, kernel)

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
        encoded = [os.fsencode(name) for name in (*tmps, *paths)]
        offsets = np.zeros(len(encoded), np.int64)
        np.cumsum([len(name) + 1 for name in encoded[:-1]], out=offsets[1:])
        names = np.frombuffer(bytearray(b"\0".join(encoded) + b"\0"), np.uint8)  # writable: the signature's type
        keep = np.ones(len(matrix), np.uint8) if skip is None else np.logical_not(skip).view(np.uint8)
        out = np.empty(layout.rows * self._frames.bound(matrix.shape[1]), np.uint8)
        index = np.empty(layout.index_nbytes, np.uint8)
        args = (matrix, keep, layout.rows, layout.order, _INDEX_MODES[layout.index], np.asarray(todo, np.int64))
        return int(self._kernel(self._frames.context(), *args, out, index, names, offsets))
