"""Chunks compressed and written to their files in one call that holds no GIL (numba, optional).

A worker writing unsharded zstd chunks one by one takes the GIL back about five times per
chunk (the codec call, then ``open``, ``write``, ``close`` and the rename of its file), and
every return costs it tens of microseconds of Python run with cold caches (benchmarks/RESULTS.md,
"GIL budget"). With numba installed (the ``native`` extra), :class:`NativeChunkFiles` compresses
a block of chunks with numcodecs' own libzstd (the per-thread context and the two parameters of
:mod:`.zstd_frames`, so the very bytes numcodecs gives) and writes each to a temporary file
that is then renamed to its key, all in one compiled loop that releases the GIL: one return
per block of chunks. On the first failure the loop stops and removes that chunk's temporary
file; the caller writes that chunk and the rest through the Python path, which raises what
the OS says (a full disk keeps its errno) and names the key.

numba's import and the loop's compilation cost each process 3–4 s, once, with the GIL held:
more GIL time than the loop saves on a write of less than ~20 GB (it saves ~0.15 s per GB).
So a process compiles it only for a dataset of at least :data:`NATIVE_MIN_BYTES`, or when
:func:`prepare` is called (a notebook or a conversion of many files may call it once, at its
start); once compiled, every dataset it suits uses it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .zstd_frames import ZstdFrames, library

#: the smallest dataset that compiles the loop in a process that has not compiled it yet
NATIVE_MIN_BYTES = 16 << 30

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


_compile_lock = threading.Lock()


def _kernel() -> Callable | None:
    """The compiled loop (compiled once per process), or ``None`` without numba, libzstd's
    symbols or a POSIX libc."""
    with _compile_lock:
        return _compiled()


@functools.cache
def _compiled() -> Callable | None:
    lib = library()
    if lib is None or os.name != "posix":
        return None
    try:
        from numba import njit
    except ImportError:
        return None
    libc = ctypes.CDLL(None)
    pointer, size = ctypes.c_void_p, ctypes.c_size_t
    compress2 = lib.ZSTD_compress2
    c_open, c_write, c_close = libc.open, libc.write, libc.close
    c_rename, c_unlink = libc.rename, libc.unlink
    c_open.argtypes, c_open.restype = [pointer, ctypes.c_int, ctypes.c_int], ctypes.c_int
    c_write.argtypes, c_write.restype = [ctypes.c_int, pointer, size], ctypes.c_ssize_t
    c_close.argtypes, c_close.restype = [ctypes.c_int], ctypes.c_int
    c_rename.argtypes, c_rename.restype = [pointer, pointer], ctypes.c_int
    c_unlink.argtypes, c_unlink.restype = [pointer], ctypes.c_int
    flags = _CREATE

    signature = "intp(uintp, uint8[:, ::1], int64[::1], uint8[::1], intp, uint8[::1], int64[::1])"

    @njit(signature, nogil=True)  # compiled here, once: one signature, no compile in a worker's call
    def write_frames(context, matrix, todo, out, bound, names, offsets):  # pragma: no cover - compiled
        """Rows ``todo`` of ``matrix``: each compressed into ``out`` and written to its temporary
        name (``offsets[k]`` into ``names``), renamed to its key (``offsets[len(todo) + k]``).
        Returns how many were written; the one that failed (if any) leaves no temporary file."""
        row_bytes = matrix.shape[1]
        source, target, text = matrix.ctypes.data, out.ctypes.data, names.ctypes.data
        count = todo.shape[0]
        for k in range(count):
            frame = compress2(context, target, bound, source + todo[k] * row_bytes, row_bytes)
            if frame > bound:  # one of libzstd's error codes
                return k
            tmp = text + offsets[k]
            fd = c_open(tmp, flags, 0o666)
            if fd < 0:
                return k
            written = 0
            while written < frame:
                step = c_write(fd, target + written, frame - written)
                if step <= 0:
                    break
                written += step
            if c_close(fd) != 0 or written < frame or c_rename(tmp, text + offsets[count + k]) != 0:
                c_unlink(tmp)
                return k
        return count

    return write_frames


def prepare() -> bool:
    """Import numba and compile the loop now (a program may call this at its start, so that its
    first large write does not pay for it); whether the loop can be used in this process."""
    return _kernel() is not None


class NativeChunkFiles:
    """Writes blocks of unsharded zstd chunks to their files, one GIL-free call per block."""

    def __init__(self, frames: ZstdFrames, kernel: Callable) -> None:
        self._frames = frames
        self._kernel = kernel

    @classmethod
    def make(cls, frames: ZstdFrames | None, nbytes: int) -> NativeChunkFiles | None:
        """The writer for a dataset of ``nbytes`` whose chain is zstd alone, or ``None``."""
        if frames is None or (nbytes < NATIVE_MIN_BYTES and _compiled.cache_info().currsize == 0):
            return None
        kernel = _kernel()
        return None if kernel is None else cls(frames, kernel)

    def write(self, matrix: np.ndarray, todo: Sequence[int], tmps: Sequence[str], paths: Sequence[str]) -> int:
        """Rows ``todo`` of a C-contiguous ``uint8`` matrix (one chunk's stored bytes per row)
        compressed and written to ``tmps[k]``, then renamed to ``paths[k]``; returns how many
        were (all of them, or those before the first that failed)."""
        if not len(todo):
            return 0
        encoded = [os.fsencode(name) for name in (*tmps, *paths)]
        offsets = np.zeros(len(encoded), np.int64)
        np.cumsum([len(name) + 1 for name in encoded[:-1]], out=offsets[1:])
        names = np.frombuffer(bytearray(b"\0".join(encoded) + b"\0"), np.uint8)  # writable: the signature's type
        bound = self._frames.bound(matrix.shape[1])
        out = np.empty(bound, np.uint8)
        context = self._frames.context()
        return int(self._kernel(context, matrix, np.asarray(todo, np.int64), out, bound, names, offsets))
