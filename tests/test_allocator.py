"""The malloc tuning of write/allocator.py: chunk-sized buffers come from the heap after it (so
freeing one does not hand its pages back to the kernel under the GIL), only where allowed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from conftest import NumpyIterator
from hdmf_zarr_parallel import WriteOptions
from hdmf_zarr_parallel.write import allocator, pipeline

pytestmark = pytest.mark.skipif(allocator.why_not_tunable() == "not Linux with glibc", reason="glibc only")

# glibc's malloc statistics, in the probes' fresh interpreters
MALLINFO = """
import ctypes, json, sys
from hdmf_zarr_parallel.write import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
"""

# mmapped blocks (glibc's mallinfo2().hblks) before and after a 4 MiB allocation, untuned then tuned
PROBE = (
    MALLINFO
    + """
import numpy as np

def mmapped_by_a_4mib_buffer():
    before = libc.mallinfo2().hblks
    buffer = np.ones(4 << 20, dtype=np.uint8)
    during = libc.mallinfo2().hblks
    del buffer
    return during - before

untuned = mmapped_by_a_4mib_buffer()
tuned = allocator.retain_freed_memory()
print(json.dumps({"untuned": untuned, "tuned": tuned, "after": mmapped_by_a_4mib_buffer(),
                  "again": allocator.retain_freed_memory()}))
"""
)


# heap bytes (mallinfo2().arena) a thread's arena hands back when it frees 94 MiB of small buffers
THREAD_HEAPS = (
    MALLINFO
    + """
import threading

def heap_bytes_given_back():
    out = {}
    def work():
        blobs = [bytes(100 << 10) for _ in range(960)]  # more than one 64 MiB heap of the thread's arena
        out["during"] = libc.mallinfo2().arena
        del blobs
        out["after"] = libc.mallinfo2().arena
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return out["during"] - out["after"]

untuned = heap_bytes_given_back()
tuned = allocator.retain_freed_memory()
after = heap_bytes_given_back()
allocator.release_freed_memory()
print(json.dumps({"untuned": untuned, "tuned": tuned, "after": after}))
"""
)


def probe(env_extra: dict[str, str] | None = None, code: str = PROBE) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_after_tuning_a_chunk_sized_buffer_comes_from_the_heap():
    result = probe()
    assert result["untuned"] == 1  # glibc's default: a fresh mmap for the buffer, munmap at its free
    assert result["tuned"] is True and result["again"] is True
    assert result["after"] == 0


def test_after_tuning_a_worker_threads_heaps_are_kept_for_reuse():
    """glibc unmaps a thread arena's emptied heap unless the top pad is a whole heap (under the GIL)."""
    result = probe(code=THREAD_HEAPS)
    assert result["untuned"] >= 32 << 20  # glibc's default: the emptied heap is unmapped at the free
    assert result["tuned"] is True
    assert result["after"] == 0


def test_the_users_own_malloc_settings_are_left_alone():
    result = probe({"MALLOC_TRIM_THRESHOLD_": str(1 << 20)})
    assert result["tuned"] is False
    assert result["after"] == result["untuned"] == 1


@pytest.mark.parametrize("tune", [True, False])
def test_a_write_tunes_the_allocator_only_when_asked(tmp_path, monkeypatch, tune):
    calls = []
    monkeypatch.setattr(pipeline, "retain_freed_memory", lambda: calls.append("retain") or True)
    monkeypatch.setattr(pipeline, "release_freed_memory", lambda: calls.append("release"))
    data = np.arange(4000 * 8, dtype="int16").reshape(4000, 8)
    array = zarr.create_array(
        zarr.storage.LocalStore(tmp_path / "a.zarr"), shape=data.shape, dtype=data.dtype, chunks=(500, 8)
    )
    from hdmf_zarr_parallel.engines.threads import ThreadEngine
    from hdmf_zarr_parallel.write.dataset import DatasetWrite

    options = WriteOptions(engine="threads", max_workers=2, tune_malloc=tune)
    pipeline.write_datasets(
        [DatasetWrite(array, NumpyIterator(data, buffer_shape=(1000, 8)))], ThreadEngine(2), options
    )
    np.testing.assert_array_equal(array[...], data)
    assert calls == (["retain", "release"] if tune else [])  # kept during the write, given back after it


def test_tune_malloc_must_be_a_bool():
    with pytest.raises(TypeError, match="tune_malloc must be True or False"):
        WriteOptions(tune_malloc="yes")
