"""The compiled loop of :mod:`.native`: imported only where numba is installed.

The C functions it calls are bound by name (``hzp_*`` symbols registered with llvmlite for this
process: libzstd's ``ZSTD_compress2`` from numcodecs' zstd extension, ``crc32c_extend`` from
``google_crc32c``'s library, libc's file calls), not by address, so numba can keep the compiled
loop in its on-disk cache (``cache=True``: the module's ``__pycache__``, or numba's user cache
directory where that is read-only) and a later process loads it instead of compiling it again.
Importing this module registers the symbols, then compiles the loop or loads it from that cache.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
from llvmlite import binding
from numba import njit, types

from ..shard_layout import EMPTY
from .zstd_frames import library


def _crc32c_library() -> ctypes.CDLL:
    """``google_crc32c``'s C library (loaded by its extension module), whose ``crc32c_extend`` zarr's codec calls."""
    try:
        import google_crc32c._crc32c as extension

        return ctypes.CDLL(extension.__file__)
    except (ImportError, OSError) as exc:
        raise ImportError(f"google_crc32c's C library: {exc}") from exc


def _bind(lib: ctypes.CDLL, name: str, signature: types.Signature) -> types.ExternalFunction:
    """``name`` of ``lib`` as a function the loop calls, registered for this process as ``hzp_<name>``."""
    try:
        address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError as exc:
        raise ImportError(f"{name} is not exported by {lib._name}") from exc
    binding.add_symbol(f"hzp_{name}", address)
    return types.ExternalFunction(f"hzp_{name}", signature)


_zstd = library()
if _zstd is None:
    raise ImportError("numcodecs' zstd extension does not export libzstd's API")
_libc = ctypes.CDLL(None)
_pointer, _size = types.uintp, types.uintp
compress2 = _bind(_zstd, "ZSTD_compress2", _size(_pointer, _pointer, _size, _pointer, _size))
crc_extend = _bind(_crc32c_library(), "crc32c_extend", types.uint32(types.uint32, _pointer, _size))
c_open = _bind(_libc, "open", types.intc(_pointer, types.intc, types.intc))
c_write = _bind(_libc, "write", types.intp(types.intc, _pointer, _size))
c_close = _bind(_libc, "close", types.intc(types.intc))
c_rename = _bind(_libc, "rename", types.intc(_pointer, _pointer))
c_unlink = _bind(_libc, "unlink", types.intc(_pointer))

CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_EMPTY = np.uint64(EMPTY)


@njit("boolean(intc, uintp, intp)", nogil=True, cache=True)
def write_all(fd, data, nbytes):  # pragma: no cover - compiled
    """All ``nbytes`` from ``data`` written to ``fd`` (a short write is continued)."""
    written = 0
    while written < nbytes:
        step = c_write(fd, data + written, nbytes - written)
        if step <= 0:
            return False
        written += step
    return True


_rows = types.Array(types.uint8, 2, "C", readonly=True)  # an iterator's buffer may be read-only: never written
_bytes, _int64s = types.Array(types.uint8, 1, "C"), types.Array(types.int64, 1, "C")


@njit(
    types.intp(_pointer, _rows, _bytes, types.intp, _int64s, types.intp, _int64s, _bytes, _bytes, _bytes, _int64s),
    nogil=True,
    cache=True,
)
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
                entries[2 * i] = _EMPTY
                entries[2 * i + 1] = _EMPTY
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
        fd = c_open(tmp, CREATE, 0o666)
        if fd < 0:
            return k
        ok = at != 1 or write_all(fd, index.ctypes.data, index.shape[0])
        ok = ok and write_all(fd, target, body)
        ok = ok and (at != 2 or write_all(fd, index.ctypes.data, index.shape[0]))
        if c_close(fd) != 0 or not ok or c_rename(tmp, text + offsets[count + k]) != 0:
            c_unlink(tmp)
            return k
    return count


@njit("intp(uintp[::1], int64[::1], uint8[::1], int64[::1])", nogil=True, cache=True)
def write_files(data, sizes, names, offsets):  # pragma: no cover - compiled
    """Files already encoded: ``sizes[k]`` bytes at address ``data[k]`` written to the temporary name
    ``offsets[k]`` into ``names``, renamed to the key at ``offsets[len(data) + k]``. Returns how many
    were written; the one that failed (if any) leaves no temporary file."""
    text, count = names.ctypes.data, data.shape[0]
    for k in range(count):
        tmp = text + offsets[k]
        fd = c_open(tmp, CREATE, 0o666)
        if fd < 0:
            return k
        ok = write_all(fd, data[k], sizes[k])
        if c_close(fd) != 0 or not ok or c_rename(tmp, text + offsets[count + k]) != 0:
            c_unlink(tmp)
            return k
    return count


@njit(types.intp(_pointer, _rows, _int64s, _bytes, types.intp, _int64s), nogil=True, cache=True)
def compress_rows(context, matrix, picked, out, slot, sizes):  # pragma: no cover - compiled
    """Rows ``picked`` of ``matrix`` compressed, the ``k``-th into ``out`` at byte ``k * slot`` (a
    frame's bound: nvCOMP's batch layout), its size in ``sizes[k]``. Returns how many were
    compressed (fewer: libzstd failed on the next)."""
    row_bytes = matrix.shape[1]
    source, target = matrix.ctypes.data, out.ctypes.data
    count = picked.shape[0]
    for k in range(count):
        frame = compress2(context, target + k * slot, slot, source + picked[k] * row_bytes, row_bytes)
        if frame > slot:  # one of libzstd's error codes
            return k
        sizes[k] = frame
    return count
