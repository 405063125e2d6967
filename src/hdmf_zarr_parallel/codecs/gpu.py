"""Device-side chunk encoding with nvCOMP 6 (``nvidia.nvcomp``), framed for stock CPU readers.

cupy and nvidia.nvcomp are imported inside functions and constructors only: importing
this module is free on a machine without a GPU.

One :class:`NvcompBatchEncoder` per thread (an nvCOMP ``Codec`` is not thread-safe). Each
:meth:`NvcompBatchEncoder.encode` call is ONE batched nvCOMP encode of a list of chunks on
the encoder's CUDA stream, followed by asynchronous device-to-host copies of the
compressed bytes into a reused pinned host buffer and one stream synchronisation.

Framing per algorithm (what zarr's CPU codecs read):

* ``zstd``: nvCOMP Zstd, RAW bitstream = one zstd frame; stored as is.
* ``gzip``: nvCOMP Gzip, RAW bitstream = one gzip member; stored as is. Should a build
  emit bare deflate instead, the member is completed on the host (header + CRC32 +
  ISIZE; the CRC needs the uncompressed bytes, so this fallback is slow).
* ``lz4``: nvCOMP LZ4, RAW bitstream = one raw LZ4 block; numcodecs' 4-byte
  little-endian uncompressed-size header is put in front.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .gpu_plan import GpuCodecPlan
from .lz4_frame import HEADER_SIZE as LZ4_HEADER_SIZE
from .lz4_frame import header_bytes as lz4_header_bytes

__all__ = [
    "ALGORITHM_NAMES",
    "MAX_CHUNK_NBYTES",
    "NvcompBatchEncoder",
    "make_nvcomp_codec",
]

# nvCOMP algorithm names, first the documented spelling, then fallbacks.
ALGORITHM_NAMES: dict[str, tuple[str, ...]] = {
    "zstd": ("Zstd", "zstd", "ZSTD"),
    "gzip": ("Gzip", "gzip", "GZIP"),
    "lz4": ("LZ4", "lz4"),
}
# Largest uncompressed chunk nvCOMP compresses as one RAW unit (nvcomp/*.h).
MAX_CHUNK_NBYTES: dict[str, int] = {
    "zstd": (1 << 31) - 1,
    "gzip": (1 << 31) - 1,
    "lz4": 1 << 24,
}
_D2H = 2  # cudaMemcpyDeviceToHost


def _stream_ptr(stream: Any) -> int:
    if stream is None:
        return 0
    ptr = getattr(stream, "ptr", stream)
    return int(ptr)


def _array_ptr(a: Any) -> int:
    """Device address of a cupy array's first element."""
    data = getattr(a, "data", None)
    ptr = getattr(data, "ptr", None)
    if ptr is not None:
        return int(ptr)
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    return int(a.ctypes.data)  # host stand-in (tests with a numpy-backed fake cupy)


def make_nvcomp_codec(algorithm: str, stream_ptr: int, chunk_nbytes: int | None = None) -> tuple[Any, dict]:
    """An nvCOMP ``Codec`` for ``algorithm`` with the RAW bitstream on ``stream_ptr``.

    Tries the documented keyword set first (``algorithm``, ``bitstream_kind``,
    ``cuda_stream``, ``uncomp_chunk_size``), then simpler ones. Returns the codec and the
    keyword arguments that worked.
    """
    from nvidia import nvcomp

    if algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"nvCOMP algorithm {algorithm!r} has no CPU-readable RAW format here")
    raw = nvcomp.BitstreamKind.RAW
    errors: list[str] = []
    for name in ALGORITHM_NAMES[algorithm]:
        base: dict[str, Any] = {"algorithm": name, "bitstream_kind": raw}
        variants: list[dict[str, Any]] = []
        if stream_ptr:
            if chunk_nbytes:
                variants.append({**base, "cuda_stream": stream_ptr, "uncomp_chunk_size": int(chunk_nbytes)})
            variants.append({**base, "cuda_stream": stream_ptr})
        elif chunk_nbytes:
            variants.append({**base, "uncomp_chunk_size": int(chunk_nbytes)})
        variants.append(base)
        for kw in variants:
            try:
                return nvcomp.Codec(**kw), kw
            except Exception as exc:  # try the next spelling / keyword set
                errors.append(f"{kw}: {type(exc).__name__}: {exc}")
    raise RuntimeError(f"could not create an nvCOMP {algorithm} codec; last error: {errors[-1]}")


def _gzip_member_from_deflate(deflate: bytes, uncompressed: bytes) -> bytes:
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no flags, mtime 0, xfl 0, OS unknown
    trailer = (zlib.crc32(uncompressed) & 0xFFFFFFFF).to_bytes(4, "little") + (len(uncompressed) & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    return header + deflate + trailer


class NvcompBatchEncoder:
    """Encode batches of equally-shaped chunks on the GPU with nvCOMP; return host bytes.

    Parameters
    ----------
    plan:
        The array's :class:`~hdmf_zarr_parallel.codecs.gpu_plan.GpuCodecPlan`.
    stream:
        A ``cupy.cuda.Stream`` (or a raw ``cudaStream_t`` as int) to run on; ``None``
        creates a non-blocking stream owned by the encoder.

    Not thread-safe: use one encoder per thread.
    """

    def __init__(self, plan: GpuCodecPlan, stream: Any = None) -> None:
        import cupy

        if plan.algorithm not in ALGORITHM_NAMES:
            raise ValueError(f"unsupported algorithm {plan.algorithm!r}")
        nbytes = plan.chunk_nbytes
        if nbytes <= 0:
            raise ValueError(f"chunk of shape {plan.chunk_shape} holds no bytes")
        if nbytes > MAX_CHUNK_NBYTES[plan.algorithm]:
            raise ValueError(
                f"nvCOMP {plan.algorithm} encodes at most {MAX_CHUNK_NBYTES[plan.algorithm]} bytes per chunk; "
                f"this array's chunks hold {nbytes} bytes (use smaller chunks, or inner chunks with sharding)"
            )
        self.plan = plan
        self._cupy = cupy
        self._owns_stream = stream is None
        self.stream = cupy.cuda.Stream(non_blocking=True) if stream is None else stream
        self._stream_ptr = _stream_ptr(self.stream)
        # uncomp_chunk_size >= the chunk size so that nvCOMP never splits a chunk (rounded
        # up to 4 KiB; the largest RAW unit caps it).
        chunk_size_hint = min(-(-nbytes // 4096) * 4096, MAX_CHUNK_NBYTES[plan.algorithm])
        self._codec, self.codec_kwargs = make_nvcomp_codec(plan.algorithm, self._stream_ptr, chunk_size_hint)
        try:
            self._align = max(1, int(self._codec.get_required_compression_alignment()))
        except Exception:
            self._align = 16
        self._pinned: np.ndarray | None = None
        self._closed = False
        self.last_encoded_nbytes = 0

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the codec, the pinned staging buffer and (if owned) the stream."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream_ptr and hasattr(self.stream, "synchronize"):
                self.stream.synchronize()
        except Exception:
            pass
        self._codec = None
        self._pinned = None
        if self._owns_stream:
            self.stream = None

    def __enter__(self) -> NvcompBatchEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ helpers
    def _pinned_buffer(self, nbytes: int) -> np.ndarray:
        if self._pinned is None or self._pinned.nbytes < nbytes:
            import cupyx

            cap = max(nbytes, 2 * (self._pinned.nbytes if self._pinned is not None else 0), 1 << 20)
            self._pinned = None
            self._pinned = cupyx.empty_pinned(cap, dtype=np.uint8)
        return self._pinned

    def _prepare(self, chunks: Sequence[Any]) -> list[Any]:
        cupy = self._cupy
        shape = tuple(self.plan.chunk_shape)
        dtype = np.dtype(self.plan.dtype)
        out = []
        for i, c in enumerate(chunks):
            if not isinstance(c, cupy.ndarray):
                raise TypeError(f"chunk {i}: expected a cupy.ndarray, got {type(c).__name__}")
            if tuple(c.shape) != shape:
                raise ValueError(f"chunk {i}: shape {tuple(c.shape)} != chunk shape {shape} (pad edge chunks first)")
            if c.dtype.itemsize != dtype.itemsize or c.dtype.kind != dtype.kind:
                raise ValueError(f"chunk {i}: dtype {c.dtype} != {dtype}")
            if not c.flags.c_contiguous:
                c = cupy.ascontiguousarray(c)
            if _array_ptr(c) % self._align:
                c = c.copy()  # nvCOMP needs aligned input buffers; fresh allocations are
            out.append(c.reshape(-1).view(cupy.uint8))
        return out

    @staticmethod
    def _device_ptr(entry: Any) -> int:
        cai = getattr(entry, "__cuda_array_interface__", None)
        if cai is not None:
            return int(cai["data"][0])
        import cupy

        return int(cupy.asarray(entry).data.ptr)

    # ------------------------------------------------------------------ encode
    def encode(self, chunks: Sequence[Any], copy: bool = True) -> list[memoryview]:
        """Encode ``chunks`` (cupy arrays of the plan's chunk shape) in one nvCOMP call.

        Returns one host buffer per chunk, framed as the CPU codec expects. With
        ``copy=False`` the views point into the encoder's pinned staging buffer and are
        valid only until the next :meth:`encode` call.
        """
        if self._closed:
            raise RuntimeError("NvcompBatchEncoder is closed")
        if not chunks:
            return []
        cupy = self._cupy
        from nvidia import nvcomp

        srcs = self._prepare(chunks)
        # Work queued on the caller's current stream (e.g. an H2D copy) must finish first.
        current = cupy.cuda.get_current_stream()
        if self._stream_ptr and current.ptr != self._stream_ptr and hasattr(self.stream, "wait_event"):
            ev = cupy.cuda.Event(disable_timing=True)
            ev.record(current)
            self.stream.wait_event(ev)

        batch = nvcomp.as_arrays(srcs, cuda_stream=self._stream_ptr)
        enc = self._codec.encode(batch)
        # wait here, where cupy lets other threads run, rather than inside nvCOMP's
        # buffer_sizes, which holds the GIL while it waits (measured on an H200)
        self._synchronize()
        sizes = [int(s) for s in enc.buffer_sizes]
        header = LZ4_HEADER_SIZE if self.plan.algorithm == "lz4" else 0
        ptrs = [self._device_ptr(enc[i]) for i in range(len(sizes))]
        lo = min(ptrs)
        span = max(p + n for p, n in zip(ptrs, sizes, strict=True)) - lo
        if span <= 4 * self.plan.chunk_nbytes * len(sizes) + (1 << 20):
            # nvCOMP places a batch's outputs in one allocation: one D2H copy of that region
            # beats one copy per chunk (per-chunk copies halve throughput at 64 KiB chunks)
            pinned = self._pinned_buffer(span)
            cupy.cuda.runtime.memcpyAsync(pinned.ctypes.data, lo, span, _D2H, self._stream_ptr)
            self._synchronize()
            region = memoryview(pinned[:span])
            pieces = [region[p - lo : p - lo + n] for p, n in zip(ptrs, sizes, strict=True)]
            if copy:  # only the compressed bytes, not the gaps between nvCOMP's output slots
                pieces = [memoryview(bytes(piece)) for piece in pieces]
            if header:
                framing = lz4_header_bytes(self.plan.chunk_nbytes)
                pieces = [memoryview(framing + bytes(piece)) for piece in pieces]
            out = pieces
            self.last_encoded_nbytes = sum(sizes) + header * len(sizes)
            del enc, batch
        else:
            out = self._copy_each(enc, sizes, ptrs, header, copy)
            del enc, batch
        if self.plan.algorithm == "gzip":
            out = self._ensure_gzip_members(out, srcs)
        return out

    def _synchronize(self) -> None:
        if self._stream_ptr:
            self._cupy.cuda.runtime.streamSynchronize(self._stream_ptr)
        else:
            self._cupy.cuda.runtime.deviceSynchronize()

    def _copy_each(self, enc, sizes: list[int], ptrs: list[int], header: int, copy: bool) -> list[memoryview]:
        """One D2H copy per chunk into the pinned buffer (outputs scattered in device memory)."""
        total = sum(sizes) + header * len(sizes)
        pinned = self._pinned_buffer(total)
        base = pinned.ctypes.data
        bounds: list[tuple[int, int]] = []
        off = 0
        for ptr, n in zip(ptrs, sizes, strict=True):
            start = off
            if header:
                pinned[off : off + header] = np.frombuffer(lz4_header_bytes(self.plan.chunk_nbytes), dtype=np.uint8)
                off += header
            if n:
                self._cupy.cuda.runtime.memcpyAsync(base + off, ptr, n, _D2H, self._stream_ptr)
            off += n
            bounds.append((start, off))
        self._synchronize()
        self.last_encoded_nbytes = total
        view = memoryview(bytearray(pinned[:total])) if copy else memoryview(pinned)[:total]
        return [view[a:b] for a, b in bounds]

    def _ensure_gzip_members(self, blobs: list[memoryview], srcs: list[Any]) -> list[memoryview]:
        """Complete bare deflate streams into gzip members (fallback; normally a no-op)."""
        fixed: list[memoryview] = []
        for blob, src in zip(blobs, srcs, strict=True):
            if len(blob) >= 2 and blob[0] == 0x1F and blob[1] == 0x8B:
                fixed.append(blob)
            else:
                raw = self._cupy.asnumpy(src).tobytes()
                fixed.append(memoryview(_gzip_member_from_deflate(bytes(blob), raw)))
        return fixed
