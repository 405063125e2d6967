"""Read a zarr v3 store with three independent implementations, and count frames in a chunk.

* stock zarr-python (numcodecs' c-blosc, zstd, zlib);
* zarrs (Rust), through ``zarrs.ZarrsCodecPipeline`` in strict mode, so it never falls back
  to zarr-python's codecs;
* tensorstore's ``zarr3`` driver (C++).

:func:`zstd_frames` and :func:`gzip_members` count what a chunk is made of: tensorstore
refuses zstd chunks of several frames, tensorstore and zarrs gzip chunks of several members.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

__all__ = ["assert_read_by_all", "gzip_members", "read_tensorstore", "read_zarrs", "zstd_frames"]


def read_zarrs(path: Path, name: str | None = None) -> np.ndarray:
    pytest.importorskip("zarrs")
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "codec_pipeline.strict": True}):
        array = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), path=name or "", mode="r")
        assert type(array._async_array.codec_pipeline).__name__ == "ZarrsCodecPipeline"
        return array[...]


def read_tensorstore(path: Path, name: str | None = None) -> np.ndarray:
    ts = pytest.importorskip("tensorstore")
    target = Path(path) / name if name else Path(path)
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(target)}}
    return ts.open(spec, open=True, read=True).result().read().result()


def assert_read_by_all(path: Path, expected: np.ndarray, name: str | None = None, require: bool = True) -> None:
    """zarr-python, zarrs and tensorstore all read exactly ``expected``. A reader that is not installed
    skips the test (``require``, the default: both are in the ``test`` extra) or is left out."""
    stock = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), path=name or "", mode="r")[...]
    np.testing.assert_array_equal(stock, expected, err_msg="zarr-python")
    for module, read in (("zarrs", read_zarrs), ("tensorstore", read_tensorstore)):
        if require or importlib.util.find_spec(module) is not None:
            np.testing.assert_array_equal(read(path, name), expected, err_msg=module)


_ZSTD_MAGIC = 0xFD2FB528


def zstd_frames(blob: bytes) -> int:
    """How many zstd frames ``blob`` holds, walking frame and block headers (RFC 8878 §3.1)."""
    mv, pos, frames = memoryview(blob), 0, 0
    while pos < len(mv):
        magic = struct.unpack_from("<I", mv, pos)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            pos += 8 + struct.unpack_from("<I", mv, pos + 4)[0]
            continue
        assert magic == _ZSTD_MAGIC, f"not a zstd frame at byte {pos}"
        descriptor = mv[pos + 4]
        fcs_flag, single, checksum, dict_flag = (
            descriptor >> 6,
            (descriptor >> 5) & 1,
            (descriptor >> 2) & 1,
            descriptor & 3,
        )
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        pos += (1 if single else 0, 2, 4, 8)[fcs_flag]
        while True:
            block = int.from_bytes(mv[pos : pos + 3], "little")
            last, kind, size = block & 1, (block >> 1) & 3, block >> 3
            pos += 3 + (1 if kind == 1 else size)
            if last:
                break
        pos += 4 * checksum
        frames += 1
    assert pos == len(mv), "trailing bytes after the last zstd frame"
    return frames


def gzip_members(blob: bytes) -> int:
    """How many gzip members ``blob`` holds."""
    members, rest = 0, bytes(blob)
    while rest:
        d = zlib.decompressobj(wbits=31)
        d.decompress(rest)
        assert d.eof, "truncated gzip member"
        members += 1
        rest = d.unused_data
    return members
