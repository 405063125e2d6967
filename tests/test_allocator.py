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

# mmapped blocks (glibc's mallinfo2().hblks) before and after a 4 MiB allocation, untuned then tuned
PROBE = """
import ctypes, json, sys
import numpy as np
from hdmf_zarr_parallel.write import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

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


def probe(env_extra: dict[str, str] | None = None) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_after_tuning_a_chunk_sized_buffer_comes_from_the_heap():
    result = probe()
    assert result["untuned"] == 1  # glibc's default: a fresh mmap for the buffer, munmap at its free
    assert result["tuned"] is True and result["again"] is True
    assert result["after"] == 0


def test_the_users_own_malloc_settings_are_left_alone():
    result = probe({"MALLOC_TRIM_THRESHOLD_": str(1 << 20)})
    assert result["tuned"] is False
    assert result["after"] == result["untuned"] == 1


@pytest.mark.parametrize("tune", [True, False])
def test_a_write_tunes_the_allocator_only_when_asked(tmp_path, monkeypatch, tune):
    calls = []
    monkeypatch.setattr(pipeline, "retain_freed_memory", lambda: calls.append(1) or True)
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
    assert calls == ([1] if tune else [])


def test_tune_malloc_must_be_a_bool():
    with pytest.raises(TypeError, match="tune_malloc must be True or False"):
        WriteOptions(tune_malloc="yes")
