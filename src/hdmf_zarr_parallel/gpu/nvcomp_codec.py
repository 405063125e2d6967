"""Making nvCOMP codecs and reading device addresses: the two places the GPU path meets nvCOMP's and cupy's APIs.

``nvidia.nvcomp`` is imported inside :func:`make_nvcomp_codec` only, so importing this
module is free on a machine without a GPU.
"""

from __future__ import annotations

from typing import Any

from . import algorithms

__all__ = ["array_ptr", "make_nvcomp_codec", "stream_ptr"]


def stream_ptr(stream: Any) -> int:
    if stream is None:
        return 0
    ptr = getattr(stream, "ptr", stream)
    return int(ptr)


def array_ptr(a: Any) -> int:
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
    names = algorithms.get(algorithm).nvcomp_names
    from nvidia import nvcomp

    raw = nvcomp.BitstreamKind.RAW
    errors: list[str] = []
    for name in names:
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
