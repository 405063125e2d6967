"""zstd frames made by numcodecs' own libzstd through its C API: one context per thread, written in place.

numcodecs' ``zstd.compress`` creates and frees a compression context and allocates a ``bytes``
result on every call, all while holding the GIL; at one call per chunk (per inner chunk of a
shard) that bookkeeping is much of what a writer thread holds the GIL for. numcodecs' extension
module exports the libzstd it is built with, so here that very library is called through
``ctypes`` (which releases the GIL for each call): one context per thread, set once to the two
parameters numcodecs sets (compression level and checksum flag) and reused, writing each frame
straight into a buffer the caller owns: a whole shard's frames one after another into one
buffer (:meth:`ZstdFrames.pack_rows`). Same library, same parameters: the same bytes as
numcodecs (``tests/test_zstd_frames.py`` compares them; zstd's output does not depend on a
context's history). Unsharded chunks (one ~1 MiB frame each) keep numcodecs' ``compress`` in
the Python path (the direct call per chunk measured no better there). With numba,
:mod:`.native` calls this library's ``ZSTD_compress2`` with these contexts for a whole block
of chunks or shards in one GIL-free loop; this module's loop is then only the fallback's.

:func:`zstd_frames` returns ``None`` where the library's symbols cannot be found (another build of
numcodecs); callers then keep numcodecs' ``compress``.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Sequence

import numpy as np

_C_LEVEL = 100  # ZSTD_c_compressionLevel, from zstd.h (a stable parameter)
_C_CHECKSUM = 201  # ZSTD_c_checksumFlag


@functools.cache
def library() -> ctypes.CDLL | None:
    """numcodecs' zstd extension as a C library, when it exports libzstd's API and is the one numcodecs uses."""
    try:
        import numcodecs.zstd as numcodecs_zstd

        lib = ctypes.CDLL(numcodecs_zstd.__file__)
        signatures = {
            "ZSTD_versionNumber": ([], ctypes.c_uint),
            "ZSTD_createCCtx": ([], ctypes.c_void_p),
            "ZSTD_freeCCtx": ([ctypes.c_void_p], ctypes.c_size_t),
            "ZSTD_CCtx_setParameter": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int], ctypes.c_size_t),
            "ZSTD_compress2": (
                [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t],
                ctypes.c_size_t,
            ),
            "ZSTD_compressBound": ([ctypes.c_size_t], ctypes.c_size_t),
            "ZSTD_isError": ([ctypes.c_size_t], ctypes.c_uint),
            "ZSTD_getErrorName": ([ctypes.c_size_t], ctypes.c_char_p),
            "ZSTD_maxCLevel": ([], ctypes.c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
        if lib.ZSTD_versionNumber() != numcodecs_zstd.VERSION_NUMBER:
            return None
        return lib
    except (ImportError, OSError, AttributeError):
        return None


class _Context:
    """One thread's compression context; freed with the thread's local storage."""

    def __init__(self, lib: ctypes.CDLL, level: int, checksum: bool) -> None:
        self._free = lib.ZSTD_freeCCtx
        self.pointer = lib.ZSTD_createCCtx()
        if not self.pointer:
            raise MemoryError("ZSTD_createCCtx failed")
        for parameter, value in ((_C_LEVEL, level), (_C_CHECKSUM, int(checksum))):
            result = lib.ZSTD_CCtx_setParameter(self.pointer, parameter, value)
            if lib.ZSTD_isError(result):
                raise RuntimeError(f"zstd parameter {parameter}={value}: {lib.ZSTD_getErrorName(result).decode()}")

    def __del__(self) -> None:
        if self.pointer:
            self._free(self.pointer)
            self.pointer = None


class ZstdFrames:
    """Compresses with one zstd level and checksum flag, as numcodecs' ``Zstd(level, checksum)``."""

    def __init__(self, lib: ctypes.CDLL, level: int, checksum: bool) -> None:
        self._lib = lib
        self.level = min(int(level), lib.ZSTD_maxCLevel())  # numcodecs caps the level so too
        self.checksum = bool(checksum)
        self._local = threading.local()
        self._compress2 = lib.ZSTD_compress2
        self._bounds: dict[int, int] = {}

    def context(self) -> int:
        """This thread's compression context (made on first use, set to this level and checksum)."""
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = _Context(self._lib, self.level, self.checksum)
        return context.pointer

    def bound(self, nbytes: int) -> int:
        """The most bytes a frame of ``nbytes`` of input can take (asked of libzstd once per size)."""
        bound = self._bounds.get(nbytes)
        if bound is None:
            bound = self._bounds[nbytes] = int(self._lib.ZSTD_compressBound(nbytes))
        return bound

    def pack_rows(self, rows: np.ndarray, order: Sequence[int], out: np.ndarray, start: int) -> list[int]:
        """Compress the rows of a C-contiguous 2-D array listed in ``order`` into ``out`` one after
        another from byte ``start``; returns each row's frame size (0 for a row not listed).
        ``out`` must hold ``start`` plus :meth:`bound` of a row for every listed row."""
        sizes = [0] * len(rows)
        if rows.ndim != 2 or not rows.flags.c_contiguous:
            raise ValueError("pack_rows needs the rows of a C-contiguous 2-D array")
        row_nbytes = rows.shape[1] * rows.itemsize  # not strides[0]: numpy may set any stride for one row
        context, compress2 = self.context(), self._compress2
        source, target, end = rows.ctypes.data, out.ctypes.data, out.nbytes
        offset = start
        for i in order:  # the loop a writer thread runs per inner chunk: kept to the call itself
            size = compress2(context, target + offset, end - offset, source + i * row_nbytes, row_nbytes)
            if size > end - offset:
                self._raise(size)
            sizes[i] = size
            offset += size
        return sizes

    def _raise(self, code: int) -> None:
        """A result above the capacity given is one of libzstd's error codes (the largest size_t values)."""
        raise RuntimeError(f"Zstd compression error: {self._lib.ZSTD_getErrorName(code).decode()}")


def zstd_frames(level: int, checksum: bool = False) -> ZstdFrames | None:
    """A compressor with numcodecs' libzstd, or ``None`` where that library cannot be called directly."""
    lib = library()
    return None if lib is None else ZstdFrames(lib, level, checksum)


def frames_for(bytes_codecs: Sequence[object]) -> ZstdFrames | None:
    """The compressor for a chain whose only bytes-to-bytes codec is zarr's ``ZstdCodec``, else ``None``."""
    from zarr.codecs import ZstdCodec

    if len(bytes_codecs) != 1 or not isinstance(bytes_codecs[0], ZstdCodec):
        return None
    return zstd_frames(bytes_codecs[0].level, bytes_codecs[0].checksum)
