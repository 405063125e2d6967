"""Keep freed chunk buffers in the process during a write: glibc's malloc settings for a writer.

Every unit a worker writes allocates and frees buffers of about a chunk: the padded copy,
the compressed bytes, the iterator's read. With glibc's default settings such a buffer is
handed back to the kernel when it is freed, in the thread that drops the last reference,
which holds the GIL while it does; the next buffer's pages are then faulted in again:

* a buffer above the mmap threshold is ``munmap``-ed; the main heap's top is trimmed above
  the trim threshold;
* a worker thread allocates from its own arena, made of 64 MiB heaps: a heap left empty by a
  free is unmapped whole, unless the top pad is as large as a heap (glibc checks the pad there,
  not the trim threshold), and a new heap is made writable a few pages at a time.

Raising the mmap threshold to glibc's own ceiling for it (32 MiB on 64-bit), the trim threshold
above it and the top pad to a whole heap keeps freed buffers for reuse instead: the GIL-held
time per unit falls (``benchmarks/bench_gil.py`` measures it) and nothing else about the
write changes. The write's own peak stays under ``max_inflight_bytes`` as before; after each
write, :func:`release_freed_memory` gives what was freed back to the kernel (``malloc_trim``).

Applied once per process, only on Linux with glibc, only when ``WriteOptions.tune_malloc``
is true (the default), and never where the user set glibc's malloc variables themselves
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or ``glibc.malloc`` tunables).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold stops
TRIM_THRESHOLD = 128 << 20
TOP_PAD = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit (2 x the mmap threshold ceiling): a thread arena's heap

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_lock = threading.Lock()
_state: bool | None = None  # None: not tried yet; else whether the thresholds were set


def why_not_tunable() -> str | None:
    """Why this process's allocator is left as it is (``None``: it can be tuned)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not Linux with glibc"
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "glibc's malloc variables are set in the environment"
    return None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds and top pad for chunk-sized buffers, once per process; whether set."""
    global _state
    with _lock:
        if _state is None:
            reason = why_not_tunable()
            if reason is None:
                mallopt = ctypes.CDLL(None).mallopt
                settings = (
                    (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                    (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                    (M_TOP_PAD, TOP_PAD),
                )
                _state = all([bool(mallopt(param, value)) for param, value in settings])
                logger.debug("malloc thresholds for chunk buffers set: %s", _state)
            else:
                _state = False
                logger.debug("malloc thresholds left as they are: %s", reason)
        return _state


def release_freed_memory() -> None:
    """After a write in a tuned process: hand the freed memory of every arena back to the kernel."""
    if _state:
        ctypes.CDLL(None).malloc_trim(0)
