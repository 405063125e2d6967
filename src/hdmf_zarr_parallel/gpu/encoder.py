"""Device-side chunk encoding with nvCOMP 6 (``nvidia.nvcomp``), framed for stock CPU readers.

cupy and nvidia.nvcomp are imported inside functions and constructors only: importing
this module is free on a machine without a GPU.

One :class:`NvcompBatchEncoder` per thread (an nvCOMP ``Codec`` is not thread-safe). Each
:meth:`NvcompBatchEncoder.encode_rows` call is ONE batched nvCOMP encode on the encoder's
CUDA stream: nvCOMP reads the chunks as rows of one device matrix through an offset table
and writes into one pre-allocated output buffer of fixed-size slots. One device-to-host
copy brings that region into pinned host memory that the returned views own (back to
cupy's pinned pool once they are stored). No step costs Python work per chunk on the
device side.

Each plan's output algorithm (:mod:`.algorithms`) names the nvCOMP algorithm, caps the
chunk size and frames the RAW output (a header, a trailer, nothing) into what zarr's CPU
codec reads.

Rows may also come as bytes (``uint8``, one row of ``chunk_nbytes`` per chunk), as after
the byte shuffle of a ``numcodecs.shuffle`` chain. An algorithm may also have nvCOMP compress
each chunk as several pieces (Blosc's blocks, after its per-block shuffle on the device): the
offset table then points at every piece of every chunk, still in one call.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import algorithms
from .inputs import BatchInput, once
from .nvcomp_codec import array_ptr, make_nvcomp_codec, stream_ptr
from .plan import GpuCodecPlan

__all__ = ["NvcompBatchEncoder", "make_nvcomp_codec"]

_D2H = 2  # cudaMemcpyDeviceToHost

logger = logging.getLogger(__name__)


class NvcompBatchEncoder:
    """Encode batches of equally-shaped chunks on the GPU with nvCOMP; return host bytes.

    Parameters
    ----------
    plan:
        The array's :class:`~hdmf_zarr_parallel.gpu.plan.GpuCodecPlan`.
    stream:
        A ``cupy.cuda.Stream`` (or a raw ``cudaStream_t`` as int) to run on; ``None``
        creates a non-blocking stream owned by the encoder.

    Not thread-safe: use one encoder per thread.
    """

    def __init__(self, plan: GpuCodecPlan, stream: Any = None) -> None:
        import cupy

        algorithm = algorithms.get(plan.algorithm)
        nbytes = plan.chunk_nbytes
        if nbytes <= 0:
            raise ValueError(f"chunk of shape {plan.chunk_shape} holds no bytes")
        # the pieces of each chunk nvCOMP compresses separately (the whole chunk, or Blosc's blocks)
        self._offsets, self._sizes = algorithm.streams(plan)
        unit = int(self._sizes.max())
        if unit > algorithm.max_chunk_nbytes:
            raise ValueError(
                f"nvCOMP {plan.algorithm} encodes at most {algorithm.max_chunk_nbytes} bytes per chunk; "
                f"this array's chunks hold {unit} bytes (use smaller chunks, or inner chunks with sharding)"
            )
        self.plan = plan
        self.algorithm = algorithm
        self._cupy = cupy
        self._owns_stream = stream is None
        self.stream = cupy.cuda.Stream(non_blocking=True) if stream is None else stream
        self._stream_ptr = stream_ptr(self.stream)
        # uncomp_chunk_size >= the chunk size so that nvCOMP never splits a chunk (rounded
        # up to 4 KiB; the largest RAW unit caps it).
        chunk_size_hint = min(-(-unit // 4096) * 4096, algorithm.max_chunk_nbytes)
        self._codec, self.codec_kwargs = make_nvcomp_codec(plan.algorithm, self._stream_ptr, chunk_size_hint)
        try:
            self._align = max(1, int(self._codec.get_required_compression_alignment()))
        except Exception:
            self._align = 16
        self._pinned: np.ndarray | None = None
        self._slot: int | None = None
        self._closed = False
        self.last_encoded_nbytes = 0
        #: whether nvCOMP encodes into our own output buffer (None: not tried yet)
        self.preallocated_output: bool | None = None

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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("NvcompBatchEncoder is closed")

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

    @staticmethod
    def _batch_host_buffer(nbytes: int) -> np.ndarray:
        """Pinned host memory for one batch's output, owned by the views handed out.

        It goes back to cupy's pinned memory pool when the last view is dropped (after
        the writers stored it), so the next batch reuses it without a host copy or a new
        ``cudaHostAlloc``; sizes are rounded up to 4 MiB so that batches share blocks.
        """
        import cupyx

        bucket = 4 << 20
        return cupyx.empty_pinned(-(-nbytes // bucket) * bucket, dtype=np.uint8)

    def _check_chunks(self, chunks: Sequence[Any]) -> None:
        cupy = self._cupy
        shape = tuple(self.plan.chunk_shape)
        for i, c in enumerate(chunks):
            if not isinstance(c, cupy.ndarray):
                raise TypeError(f"chunk {i}: expected a cupy.ndarray, got {type(c).__name__}")
            if tuple(c.shape) != shape:
                raise ValueError(f"chunk {i}: shape {tuple(c.shape)} != chunk shape {shape} (pad edge chunks first)")
            self._check_dtype(c.dtype, f"chunk {i}")

    def _check_dtype(self, dtype: Any, what: str) -> None:
        want = np.dtype(self.plan.dtype)
        if dtype.itemsize != want.itemsize or dtype.kind != want.kind:
            raise ValueError(f"{what}: dtype {dtype} != {want}")

    def _input_buffer(self, rows: Any) -> tuple[Any, int]:
        """The rows as one aligned, C-contiguous byte buffer and the byte stride between rows.

        Rows whose size is not a multiple of nVCOMP's alignment are copied once into a
        matrix with padded rows (nvCOMP needs every input address aligned).
        """
        cupy = self._cupy
        if not rows.flags.c_contiguous or array_ptr(rows) % self._align:
            rows = cupy.ascontiguousarray(rows) if not rows.flags.c_contiguous else rows.copy()
        nbytes = self.plan.chunk_nbytes
        flat = rows.reshape(-1).view(cupy.uint8)
        if nbytes % self._align == 0:
            return flat, nbytes
        stride = -(-nbytes // self._align) * self._align
        padded = cupy.empty((len(rows), stride), dtype=cupy.uint8)
        padded[:, :nbytes] = flat.reshape(len(rows), nbytes)
        return padded.reshape(-1), stride

    def _slot_nbytes(self, sample: Any) -> int:
        """Bytes reserved per chunk in the output buffer: nvCOMP's bound, rounded up to 256."""
        if self._slot is None:
            from nvidia import nvcomp

            bound = int(self._codec.get_max_comp_buffer_size(nvcomp.as_array(sample, cuda_stream=self._stream_ptr)))
            self._slot = -(-bound // 256) * 256
        return self._slot

    @staticmethod
    def _device_ptr(entry: Any) -> int:
        cai = getattr(entry, "__cuda_array_interface__", None)
        if cai is not None:
            return int(cai["data"][0])
        import cupy

        return int(cupy.asarray(entry).data.ptr)

    def _wait_for_current_stream(self) -> None:
        """Work queued on the caller's current stream (e.g. an H2D copy) must finish first."""
        cupy = self._cupy
        current = cupy.cuda.get_current_stream()
        if self._stream_ptr and current.ptr != self._stream_ptr and hasattr(self.stream, "wait_event"):
            ev = cupy.cuda.Event(disable_timing=True)
            ev.record(current)
            self.stream.wait_event(ev)

    # ------------------------------------------------------------------ encode
    def encode(self, chunks: Sequence[Any], copy: bool = True) -> list[memoryview]:
        """Encode ``chunks`` (cupy arrays of the plan's chunk shape) in one nvCOMP call.

        The chunks are stacked into one device matrix (one device copy) and encoded by
        :meth:`encode_rows`.
        """
        self._check_open()
        if not chunks:
            return []
        self._check_chunks(chunks)
        rows = self._cupy.stack([c.reshape(-1) for c in chunks])
        return self.encode_rows(rows, copy=copy)

    def encode_rows(self, rows: Any, indices: Sequence[int] | None = None, copy: bool = True) -> list[memoryview]:
        """Encode the chosen rows of a ``(chunks, chunk elements)`` device matrix in ONE nvCOMP call.

        Each row is one chunk in C order (what ``chunk_matrix`` builds). nvCOMP reads the
        rows in place through an offset table and writes into one pre-allocated output
        buffer, so a batch costs no per-chunk Python work on the device side. Returns one
        host buffer per encoded row, framed as the CPU codec expects. With ``copy=False``
        the views point into the encoder's pinned staging buffer and are valid only until
        the next call.
        """
        self._check_open()
        cupy = self._cupy
        from nvidia import nvcomp

        if not isinstance(rows, cupy.ndarray):
            raise TypeError(f"expected a cupy.ndarray of chunk rows, got {type(rows).__name__}")
        elems = math.prod(self.plan.chunk_shape)
        as_bytes = rows.dtype == cupy.uint8 and rows.ndim == 2 and rows.shape[1] == self.plan.chunk_nbytes
        if not as_bytes:  # typed rows: one element per value
            if rows.ndim != 2 or rows.shape[1] != elems:
                raise ValueError(
                    f"rows of shape {tuple(rows.shape)}: expected (n, {elems}) for chunks of {self.plan.chunk_shape}"
                )
            self._check_dtype(rows.dtype, "rows")
        picked = np.arange(len(rows)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if picked.size == 0:
            return []
        if picked.min() < 0 or picked.max() >= len(rows):
            raise IndexError(f"row indices must lie in [0, {len(rows)})")

        self._wait_for_current_stream()
        with self._on_stream():
            buffer, stride = self._input_buffer(rows)
            nbytes = self.plan.chunk_nbytes
            matrix = buffer.reshape(-1, stride)
            chosen = once(lambda: matrix[:, :nbytes][cupy.asarray(picked)])
            # the compression input: the rows themselves, or what the algorithm makes of them (Blosc's
            # shuffled blocks), on the device
            transformed = self.algorithm.transform(cupy, self.plan, chosen)
            if transformed is None:
                source = BatchInput(cupy, matrix, picked, nbytes, self._offsets, self._sizes)
            else:
                buffer, stride = self._input_buffer(transformed)
                at = np.arange(picked.size)
                source = BatchInput(cupy, buffer.reshape(-1, stride), at, nbytes, self._offsets, self._sizes, chosen())
            starts = (source.rows[:, None] * stride + self._offsets[None, :]).reshape(-1)
            if np.any(starts % self._align):
                raise ValueError(f"nvCOMP {self.plan.algorithm} needs inputs aligned to {self._align} bytes")
            sizes_in = np.tile(self._sizes, picked.size)
            batch = nvcomp.as_arrays(buffer, starts.tolist(), sizes_in.tolist(), cuda_stream=self._stream_ptr)
            # what the framing needs from the uncompressed rows (zlib: their Adler-32), on the device
            prepared = self.algorithm.prepare(cupy, chosen)
            enc, out_ptrs, out_buffer = self._encode_batch(batch, buffer[: int(self._sizes.max())], sizes_in.size)
            # wait here, where cupy lets other threads run, rather than inside nvCOMP's
            # buffer_sizes, which holds the GIL while it waits (measured on an H200)
            self._synchronize()
            sizes = [int(s) for s in enc.buffer_sizes]
            ptrs = out_ptrs if out_ptrs is not None else [self._device_ptr(enc[i]) for i in range(len(sizes))]
            out = self._download(ptrs, sizes, copy)
            del enc, batch, out_buffer
            # framing may read uncompressed bytes back (BatchInput), on this stream
            out = self.algorithm.frame(out, self.plan, prepared, source)
        self.last_encoded_nbytes = sum(memoryview(piece).nbytes for piece in out)
        return out

    def _encode_batch(self, batch: Any, sample: Any, count: int) -> tuple[Any, list[int] | None, Any]:
        """nvCOMP's encode into one pre-allocated output buffer of fixed-size slots, whose
        addresses are known without asking each output; falls back to nvCOMP's own output."""
        if self.preallocated_output is not False:
            from nvidia import nvcomp

            cupy = self._cupy
            try:
                slot = self._slot_nbytes(sample)
                out_buffer = cupy.empty(count * slot, dtype=cupy.uint8)
                base = int(out_buffer.data.ptr)
                offsets = [i * slot for i in range(count)]
                out = nvcomp.as_arrays(out_buffer, offsets, [slot] * count, cuda_stream=self._stream_ptr)
                enc = self._codec.encode(batch, out=out)
                ptrs = [base + o for o in offsets]
                if self.preallocated_output is None:  # first call: check that nvCOMP wrote where we said
                    self._synchronize()
                    first = [self._device_ptr(enc[0]), self._device_ptr(enc[count - 1])]
                    if first != [ptrs[0], ptrs[-1]] or max(int(n) for n in enc.buffer_sizes) >= slot:
                        raise RuntimeError("nvCOMP did not report its output inside the given buffer")
                    self.preallocated_output = True
                return enc, ptrs, out_buffer
            except cupy.cuda.memory.OutOfMemoryError:
                raise  # the engine retries with smaller batches
            except Exception as exc:
                if self.preallocated_output:
                    raise
                logger.info("nvCOMP encode into a pre-allocated buffer failed (%r): using nvCOMP's output", exc)
                self.preallocated_output = False
        return self._codec.encode(batch), None, None

    def _download(self, ptrs: list[int], sizes: list[int], copy: bool) -> list[memoryview]:
        """The compressed bytes on the host: one D2H copy of the output region when it is compact."""
        cupy = self._cupy
        lo = min(ptrs)
        span = max(p + n for p, n in zip(ptrs, sizes, strict=True)) - lo
        if span > 4 * self.plan.chunk_nbytes * len(sizes) + (1 << 20):
            return self._copy_each(ptrs, sizes, copy)
        # nvCOMP's outputs sit in one allocation: one D2H copy of that region beats one
        # copy per chunk, which costs most with small chunks
        host = self._batch_host_buffer(span) if copy else self._pinned_buffer(span)
        cupy.cuda.runtime.memcpyAsync(host.ctypes.data, lo, span, _D2H, self._stream_ptr)
        self._synchronize()
        region = memoryview(host[:span])
        return [region[p - lo : p - lo + n] for p, n in zip(ptrs, sizes, strict=True)]

    def _synchronize(self) -> None:
        if self._stream_ptr:
            self._cupy.cuda.runtime.streamSynchronize(self._stream_ptr)
        else:
            self._cupy.cuda.runtime.deviceSynchronize()

    def _on_stream(self):
        """The encoder's stream as the current one (for cupy allocations and kernels)."""
        return self.stream if hasattr(self.stream, "__enter__") else contextlib.nullcontext()

    def _copy_each(self, ptrs: list[int], sizes: list[int], copy: bool) -> list[memoryview]:
        """One D2H copy per chunk into the pinned buffer (outputs scattered in device memory)."""
        total = sum(sizes)
        pinned = self._pinned_buffer(total)
        base = pinned.ctypes.data
        bounds: list[tuple[int, int]] = []
        off = 0
        for ptr, n in zip(ptrs, sizes, strict=True):
            start = off
            if n:
                self._cupy.cuda.runtime.memcpyAsync(base + off, ptr, n, _D2H, self._stream_ptr)
            off += n
            bounds.append((start, off))
        self._synchronize()
        view = memoryview(bytearray(pinned[:total])) if copy else memoryview(pinned)[:total]
        return [view[a:b] for a, b in bounds]
