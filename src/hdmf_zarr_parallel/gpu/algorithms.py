"""The GPU path's output algorithms: one object per format nvCOMP writes and a stock CPU codec reads.

An :class:`Algorithm` holds everything the GPU path knows about one output format:

* the zarr codecs it writes (``codec_names``) and the level each one's configuration asks
  for (:meth:`~Algorithm.level`), or why nvCOMP cannot write that configuration
  (:meth:`~Algorithm.refuse`);
* the nvCOMP algorithm to ask for (``nvcomp_names``: the documented spelling first, then
  others builds have used), always with the RAW bitstream, and the largest chunk nvCOMP
  compresses as one RAW unit (``max_chunk_nbytes``);
* the framing that turns nvCOMP's RAW output into the bytes the CPU codec reads:
  :meth:`~Algorithm.prepare` runs on the chunk rows before the encode (on the device),
  :meth:`~Algorithm.frame` on the downloaded RAW output;
* the CPU reference codec (:meth:`~Algorithm.reference`, numcodecs), which reads and writes
  the same format. The host lane encodes with it and turns the result back into what
  nvCOMP's RAW bitstream holds (:meth:`~Algorithm.raw`), so the framing runs on machines
  without a GPU too.

nvCOMP has no compression-level knob: the level is what the metadata says (it stays in the
metadata), and only the host lane's reference codec uses it.

Snappy, GDeflate, Cascaded, Bitcomp and ANS have no CPU reader, and nvCOMP's Deflate is
only readable inside zlib's framing: none of them is written as if it had one.

Adding a GPU codec is one :class:`Algorithm` subclass decorated with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .framing import (
    LZ4_HEADER_SIZE,
    ZLIB_HEADER,
    ZLIB_TRAILER_SIZE,
    adler32_rows,
    gzip_member,
    is_gzip_member,
    lz4_header,
    zlib_frame,
)

__all__ = ["ALGORITHMS", "Algorithm", "for_codec_name", "get", "known_codec_names", "register"]

Blob = bytes | bytearray | memoryview
#: the uncompressed bytes of the i-th chunk of a batch (for framing that needs them)
Source = Callable[[int], bytes]


class Algorithm:
    """One output format: what nvCOMP is asked for, how its output is framed, what reads it."""

    #: the plan's name for it (``GpuCodecPlan.algorithm``)
    name: ClassVar[str]
    #: the zarr codec names (as in the array metadata) whose bytes it writes
    codec_names: ClassVar[tuple[str, ...]]
    #: nvCOMP ``Codec(algorithm=...)`` spellings to try, in order
    nvcomp_names: ClassVar[tuple[str, ...]]
    #: the largest uncompressed chunk nvCOMP compresses as one RAW unit (nvcomp/*.h)
    max_chunk_nbytes: ClassVar[int] = (1 << 31) - 1

    def level(self, config: dict) -> int:
        """The compression level a codec configuration asks for (recorded in the plan)."""
        return int(config.get("level", 1))

    def refuse(self, codec_name: str, config: dict) -> str | None:  # noqa: ARG002 - a hook
        """Why nvCOMP cannot write this configuration of one of ``codec_names`` (``None``: it can)."""
        return None

    def reference(self, level: int | None) -> Any:
        """The numcodecs codec that writes and reads this format (the host lane encodes with it)."""
        raise NotImplementedError

    def raw(self, encoded: Blob) -> Blob:
        """What nvCOMP's RAW bitstream holds for a chunk the reference codec encoded as ``encoded``."""
        return encoded

    def prepare(self, xp: Any, rows: Callable[[], Any]) -> Any:  # noqa: ARG002 - a hook
        """Anything :meth:`frame` needs from the uncompressed rows, computed before the encode
        (``rows()`` gives the chosen rows as a ``(chunks, bytes)`` uint8 array of module ``xp``)."""
        return None

    def frame(self, raw: Sequence[Blob], chunk_nbytes: int, prepared: Any, source: Source) -> list[Blob]:  # noqa: ARG002
        """The stored bytes of each chunk from nvCOMP's RAW output (here: as it is)."""
        return list(raw)

    def __repr__(self) -> str:
        return f"<GPU algorithm {self.name}: nvCOMP {self.nvcomp_names[0]} for {', '.join(self.codec_names)}>"


ALGORITHMS: dict[str, Algorithm] = {}
_BY_CODEC: dict[str, Algorithm] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Make ``cls`` one of the GPU path's output algorithms (a class decorator)."""
    algorithm = cls()
    ALGORITHMS[cls.name] = algorithm
    for codec in cls.codec_names:
        _BY_CODEC[codec] = algorithm
    return cls


def get(name: str) -> Algorithm:
    """The algorithm a plan names; ``ValueError`` for one the GPU path does not write."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"nvCOMP algorithm {name!r} has no CPU-readable RAW format here") from None


def for_codec_name(codec_name: str) -> Algorithm | None:
    """The algorithm that writes a zarr codec's bytes, or ``None``."""
    return _BY_CODEC.get(codec_name)


def known_codec_names() -> list[str]:
    """Every zarr codec the GPU path writes, for messages."""
    return list(_BY_CODEC)


@register
class Zstd(Algorithm):
    """nvCOMP Zstd, RAW = one zstd frame, stored as it is."""

    name = "zstd"
    codec_names = ("zstd", "numcodecs.zstd")
    nvcomp_names = ("Zstd", "zstd", "ZSTD")

    def level(self, config: dict) -> int:
        return int(config.get("level", 0) or 0)

    def refuse(self, codec_name: str, config: dict) -> str | None:
        return f"{codec_name} with checksum=True" if config.get("checksum") else None

    def reference(self, level: int | None) -> Any:
        import numcodecs

        return numcodecs.Zstd(level=level or 0)


@register
class Gzip(Algorithm):
    """nvCOMP Gzip, RAW = one gzip member, stored as it is.

    Should a build emit a bare deflate stream instead, the member is completed on the host
    (header, CRC32 and size; the CRC needs the uncompressed bytes, so this fallback is slow).
    """

    name = "gzip"
    codec_names = ("gzip", "numcodecs.gzip")
    nvcomp_names = ("Gzip", "gzip", "GZIP")

    def reference(self, level: int | None) -> Any:
        import numcodecs

        return numcodecs.GZip(level=level if level is not None else 5)

    def frame(self, raw: Sequence[Blob], chunk_nbytes: int, prepared: Any, source: Source) -> list[Blob]:
        return [
            blob if is_gzip_member(blob) else memoryview(gzip_member(blob, source(i))) for i, blob in enumerate(raw)
        ]


@register
class LZ4(Algorithm):
    """nvCOMP LZ4, RAW = one raw LZ4 block, behind numcodecs' 4-byte little-endian size header."""

    name = "lz4"
    codec_names = ("numcodecs.lz4",)
    nvcomp_names = ("LZ4", "lz4")
    max_chunk_nbytes = 1 << 24

    def level(self, config: dict) -> int:
        return int(config.get("acceleration", 1))

    def reference(self, level: int | None) -> Any:
        import numcodecs

        return numcodecs.LZ4(acceleration=level or 1)

    def raw(self, encoded: Blob) -> Blob:
        return memoryview(encoded)[LZ4_HEADER_SIZE:]

    def frame(self, raw: Sequence[Blob], chunk_nbytes: int, prepared: Any, source: Source) -> list[Blob]:
        header = lz4_header(chunk_nbytes)
        return [memoryview(header + bytes(blob)) for blob in raw]


@register
class Zlib(Algorithm):
    """nvCOMP Deflate, RAW = one raw deflate stream, between the zlib header and the Adler-32 of
    the chunk (computed on the device): what HDF5's gzip filter becomes in hdmf-zarr."""

    name = "zlib"
    codec_names = ("numcodecs.zlib",)
    nvcomp_names = ("Deflate", "deflate", "DEFLATE")

    def reference(self, level: int | None) -> Any:
        import numcodecs

        return numcodecs.Zlib(level=level if level is not None else 1)

    def raw(self, encoded: Blob) -> Blob:
        return memoryview(encoded)[len(ZLIB_HEADER) : -ZLIB_TRAILER_SIZE]

    def prepare(self, xp: Any, rows: Callable[[], Any]) -> Any:
        return adler32_rows(xp, rows())

    def frame(self, raw: Sequence[Blob], chunk_nbytes: int, prepared: Any, source: Source) -> list[Blob]:
        return [memoryview(zlib_frame(blob, checksum)) for blob, checksum in zip(raw, prepared, strict=True)]
