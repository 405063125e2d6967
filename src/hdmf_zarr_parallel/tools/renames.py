"""Renames that never replace what they must not: ``renameat2`` where Linux offers it.

``rename_noreplace`` fails where anything is at the target, atomically with
``RENAME_NOREPLACE``; ``exchange`` swaps two names atomically with ``RENAME_EXCHANGE`` (ext4,
XFS, btrfs, tmpfs). Elsewhere (macOS, NFS, old glibc) the first falls back to a check just
before ``os.rename`` and the second says it cannot, and :func:`.destination.place` sets the
old store aside instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _renameat2_function():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_renameat2 = _renameat2_function()


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the system or filesystem cannot do it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, or ``FileExistsError`` if anything is at ``dst``: atomic with
    ``renameat2(RENAME_NOREPLACE)``, else a check just before ``os.rename`` (a short race)."""
    if _rename2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where the filesystem cannot."""
    return _rename2(a, b, _RENAME_EXCHANGE)
