"""A stand-in for cupy and ``nvidia.nvcomp`` on the host, so the device code runs without a GPU.

"Device" arrays are numpy arrays whose ``.data.ptr`` is their host address; copies between
"device" and "host" are ``memmove``. The fake nvCOMP ``Codec`` compresses each input of a
batch with numcodecs / zlib and writes what nvCOMP's RAW bitstream holds (a zstd frame, a
gzip member, a raw deflate stream, a raw LZ4 block) into the output buffers it is given.
So :class:`~hdmf_zarr_parallel.gpu.encoder.NvcompBatchEncoder` and ``NvcompLane`` run their
real code (offset tables, pre-allocated output slots, one D2H copy, framing), and only the
compression kernels are not nvCOMP's. :func:`install` puts both modules in ``sys.modules``.
"""

from __future__ import annotations

import ctypes
import sys
import types
import zlib
from types import SimpleNamespace

import numcodecs
import numpy as np


class DeviceArray(np.ndarray):
    """A numpy array that answers ``.data.ptr`` as a cupy array does, and ``.set`` / ``.get``."""

    @property
    def data(self):  # type: ignore[override]
        return SimpleNamespace(ptr=self.ctypes.data)

    def set(self, host, stream=None):  # noqa: ARG002
        np.copyto(self, host)

    def get(self):
        return np.array(self)


def _device(fn):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        return out.view(DeviceArray) if isinstance(out, np.ndarray) else out

    return wrapped


class _Stream:
    ptr = 1

    def synchronize(self):
        pass

    def wait_event(self, event):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Pool:
    def free_all_blocks(self):
        pass


def _cupy() -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    for name in dir(np):
        if not name.startswith("_"):
            setattr(cupy, name, getattr(np, name))
    for name in ("empty", "zeros", "full", "asarray", "ascontiguousarray", "arange", "empty_like", "stack"):
        setattr(cupy, name, _device(getattr(np, name)))
    cupy.concatenate = _device(np.concatenate)
    cupy.asnumpy = lambda a, stream=None: np.array(a)
    cupy.ndarray = np.ndarray
    cupy.get_default_memory_pool = cupy.get_default_pinned_memory_pool = _Pool

    def memcpy(dst, src, n, kind, stream):  # noqa: ARG001
        ctypes.memmove(dst, src, n)

    runtime = SimpleNamespace(memcpyAsync=memcpy, streamSynchronize=lambda ptr: None, deviceSynchronize=lambda: None)
    cupy.cuda = SimpleNamespace(
        Stream=lambda non_blocking=True: _Stream(),
        get_current_stream=lambda: _Stream(),
        Event=lambda disable_timing=True: SimpleNamespace(record=lambda stream: None),
        runtime=runtime,
        memory=SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {})),
    )
    return cupy


def _raw(algorithm: str, data: bytes) -> bytes:
    """What nvCOMP's RAW bitstream holds for ``data``."""
    if algorithm == "Zstd":
        return bytes(numcodecs.Zstd(level=1).encode(data))
    if algorithm == "Gzip":
        return bytes(numcodecs.GZip(level=1).encode(data))
    if algorithm == "Deflate":
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if algorithm == "LZ4":
        return bytes(numcodecs.LZ4().encode(data))[4:]
    raise ValueError(algorithm)


class _Encoded:
    def __init__(self, outs, sizes):
        self._outs, self.buffer_sizes = outs, sizes

    def __len__(self):
        return len(self._outs)

    def __getitem__(self, i):
        return SimpleNamespace(__cuda_array_interface__={"data": (self._outs[i].ctypes.data, False)})


class _Codec:
    calls: list[tuple[str, int]] = []

    def __init__(self, algorithm, bitstream_kind, cuda_stream=0, uncomp_chunk_size=None):  # noqa: ARG002
        if algorithm not in ("Zstd", "Gzip", "Deflate", "LZ4"):
            raise ValueError(f"unknown algorithm {algorithm}")
        self.algorithm = algorithm

    def get_required_compression_alignment(self):
        return 8

    def get_max_comp_buffer_size(self, sample):
        return 2 * len(sample) + 1024

    def encode(self, batch, out=None):
        _Codec.calls.append((self.algorithm, len(batch)))
        blobs = [_raw(self.algorithm, np.asarray(a).tobytes()) for a in batch]
        if out is None:
            out = [np.empty(len(b), np.uint8).view(DeviceArray) for b in blobs]
        for target, blob in zip(out, blobs, strict=True):
            target[: len(blob)] = np.frombuffer(blob, np.uint8)
        return _Encoded(out, [len(b) for b in blobs])


def _nvcomp() -> types.ModuleType:
    nvcomp = types.ModuleType("nvidia.nvcomp")
    nvcomp.BitstreamKind = SimpleNamespace(RAW="RAW")
    nvcomp.Codec = _Codec

    def as_arrays(buffer, offsets, sizes, cuda_stream=0):  # noqa: ARG001
        return [buffer[o : o + n] for o, n in zip(offsets, sizes, strict=True)]

    nvcomp.as_arrays = as_arrays
    nvcomp.as_array = lambda a, cuda_stream=0: a
    return nvcomp


def install(monkeypatch) -> None:
    """Make ``import cupy``, ``import cupyx`` and ``from nvidia import nvcomp`` give the fakes."""
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = lambda n, dtype=np.uint8: np.empty(n, dtype)
    nvidia = types.ModuleType("nvidia")
    nvidia.nvcomp = _nvcomp()
    for name, module in (("cupy", _cupy()), ("cupyx", cupyx), ("nvidia", nvidia), ("nvidia.nvcomp", nvidia.nvcomp)):
        monkeypatch.setitem(sys.modules, name, module)
