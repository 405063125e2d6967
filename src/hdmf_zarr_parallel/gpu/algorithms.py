"""The GPU path's output algorithms: one object per format nvCOMP writes and a stock CPU codec reads.

An :class:`Algorithm` holds everything the GPU path knows about one output format:

* the zarr codecs it writes (``codec_names``) and the level each one's configuration asks
  for (:meth:`~Algorithm.level`), or why nvCOMP cannot write that configuration
  (:meth:`~Algorithm.refuse`);
* the nvCOMP algorithm to ask for (``nvcomp_names``: the documented spelling first, then
  others builds have used), always with the RAW bitstream, and the largest chunk nvCOMP
  compresses as one RAW unit (``max_chunk_nbytes``);
* the framing that turns nvCOMP's RAW output into the bytes the CPU codec reads:
  :meth:`~Algorithm.transform` and :meth:`~Algorithm.prepare` run on the chunk rows before
  the encode (on the device), :meth:`~Algorithm.frame` on the downloaded RAW output. nvCOMP
  compresses each chunk as one unit, or as the pieces :meth:`~Algorithm.streams` names
  (Blosc's blocks, see :mod:`.blosc_frame`);
* the CPU reference codec (:meth:`~Algorithm.reference`, numcodecs), which reads and writes
  the same format. The host lane encodes with it and turns the result back into what
  nvCOMP's RAW bitstream holds (:meth:`~Algorithm.raw`), so the framing runs on machines
  without a GPU too.

nvCOMP has no compression-level knob: the level is what the metadata says (it stays in the
metadata), and only the host lane's reference codec uses it.

Snappy, GDeflate, Cascaded, Bitcomp and ANS have no CPU reader, and nvCOMP's Deflate is
only readable inside zlib's framing: none of them is written as if it had one.

Every chunk is one zstd frame or one gzip member, never several concatenated: tensorstore
refuses multi-frame zstd chunks, tensorstore and zarrs multi-member gzip ones.

Adding a GPU codec is one :class:`Algorithm` subclass decorated with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import blosc_frame
from .framing import (
    LZ4_HEADER_SIZE,
    ZLIB_HEADER,
    ZLIB_TRAILER_SIZE,
    adler32_rows,
    gzip_member,
    is_gzip_member,
    lz4_add_header,
    zlib_frame,
)

if TYPE_CHECKING:
    from .inputs import BatchInput
    from .plan import GpuCodecPlan

__all__ = ["ALGORITHMS", "Algorithm", "for_codec_name", "get", "known_codec_names", "register"]

Blob = bytes | bytearray | memoryview


class Algorithm:
    """One output format: what nvCOMP is asked for, how its output is framed, what reads it."""

    #: the plan's name for it (``GpuCodecPlan.algorithm``)
    name: ClassVar[str]
    #: the zarr codec names (as in the array metadata) whose bytes it writes
    codec_names: ClassVar[tuple[str, ...]]
    #: nvCOMP ``Codec(algorithm=...)`` spellings to try, in order
    nvcomp_names: ClassVar[tuple[str, ...]]
    #: the largest uncompressed chunk (or stream, see :meth:`streams`) nvCOMP compresses as one RAW unit (nvcomp/*.h)
    max_chunk_nbytes: ClassVar[int] = (1 << 31) - 1

    def level(self, config: dict) -> int:
        """The compression level a codec configuration asks for (recorded in the plan)."""
        return int(config.get("level", 1))

    def refuse(self, codec_name: str, config: dict) -> str | None:  # noqa: ARG002 - a hook
        """Why nvCOMP cannot write this configuration of one of ``codec_names`` (``None``: it can)."""
        return None

    def variant(self, codec_name: str, config: dict) -> Algorithm:  # noqa: ARG002 - a hook
        """The algorithm that writes this configuration (a family picks one of its members)."""
        return self

    def params(self, codec_name: str, config: dict) -> Hashable:  # noqa: ARG002 - a hook
        """What else of the configuration the bytes depend on (``GpuCodecPlan.params``)."""
        return None

    def refuse_plan(self, plan: GpuCodecPlan) -> str | None:  # noqa: ARG002 - a hook
        """Why this algorithm cannot write chunks of this plan (their size, ...), as a sentence for
        :class:`~.plan.Unsupported`; ``None``: it can."""
        return None

    def streams(self, plan: GpuCodecPlan) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, sizes)`` of the pieces of one chunk's compression input that nvCOMP
        compresses separately, in the order :meth:`frame` receives them (here: the whole chunk)."""
        return np.zeros(1, np.int64), np.full(1, plan.chunk_nbytes, np.int64)

    def transform(self, xp: Any, plan: GpuCodecPlan, rows: Callable[[], Any]) -> Any:  # noqa: ARG002 - a hook
        """The compression input of the chosen chunks (``rows()``, as for :meth:`prepare`), computed
        on the device before the encode, or ``None`` when the chunks are compressed as they are."""
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

    def frame(self, raw: Sequence[Blob], plan: GpuCodecPlan, prepared: Any, source: BatchInput) -> list[Blob]:  # noqa: ARG002
        """The stored bytes of each chunk from nvCOMP's RAW output, one entry per stream of each
        chunk in order (here: one per chunk, stored as it is); ``source`` reads back uncompressed
        bytes where the framing needs them."""
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


def for_codec_name(codec_name: str, config: dict | None = None) -> Algorithm | None:
    """The algorithm that writes a zarr codec's bytes (in this configuration), or ``None``."""
    algorithm = _BY_CODEC.get(codec_name)
    return algorithm.variant(codec_name, config or {}) if algorithm is not None else None


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

    def frame(self, raw: Sequence[Blob], plan: GpuCodecPlan, prepared: Any, source: BatchInput) -> list[Blob]:
        return [
            blob if is_gzip_member(blob) else memoryview(gzip_member(blob, source.chunk(i)))
            for i, blob in enumerate(raw)
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

    def frame(self, raw: Sequence[Blob], plan: GpuCodecPlan, prepared: Any, source: BatchInput) -> list[Blob]:
        return [lz4_add_header(blob, plan.chunk_nbytes) for blob in raw]


@register
class Zlib(Algorithm):
    """nvCOMP Deflate, RAW = one raw deflate stream, between the zlib header and the Adler-32 of
    the chunk (computed on the device): what HDF5's gzip filter becomes in hdmf-zarr."""

    name = "zlib"
    codec_names = ("numcodecs.zlib",)
    nvcomp_names = ("Deflate", "deflate", "DEFLATE")

    @staticmethod
    def _level(level: int | None) -> int:
        return 1 if level is None else level  # numcodecs.Zlib's default

    def reference(self, level: int | None) -> Any:
        import numcodecs

        return numcodecs.Zlib(level=self._level(level))

    def raw(self, encoded: Blob) -> Blob:
        return memoryview(encoded)[len(ZLIB_HEADER) : -ZLIB_TRAILER_SIZE]

    def prepare(self, xp: Any, rows: Callable[[], Any]) -> Any:
        return adler32_rows(xp, rows())

    def frame(self, raw: Sequence[Blob], plan: GpuCodecPlan, prepared: Any, source: BatchInput) -> list[Blob]:
        level = self._level(plan.level)
        return [zlib_frame(blob, checksum, level) for blob, checksum in zip(raw, prepared, strict=True)]


# -- Blosc ----------------------------------------------------------------------------------------
_BLOSC_REFUSED_CNAMES = {
    "blosclz": "BloscLZ has no nvCOMP equivalent",
    "snappy": "numcodecs' c-blosc is built without snappy: stock zarr could not read it",
    "zlib": "only zstd, lz4 and lz4hc blocks are built on the device",
}


class _Blosc(Algorithm):
    """c-blosc 1 chunks (zarr's ``blosc``, ``numcodecs.blosc``): blocks shuffled on the device, each
    block (or split stream) one unit of the batched nvCOMP call, header and block offsets built on
    the host (:mod:`.blosc_frame`). A family: one member per inner compressor, picked by ``cname``.

    The block size is ours (the header records it), so chunks are not byte-identical to
    c-blosc's own encoding; they decode to exactly the same data.
    """

    codec_names = ("blosc", "numcodecs.blosc")
    #: the cnames this member writes
    cnames: ClassVar[tuple[str, ...]]
    #: the algorithm that compresses each stream (its nvCOMP name and RAW format)
    inner: ClassVar[str]
    max_chunk_nbytes = 1 << 24  # per stream (LZ4's cap); ours hold about blosc_frame.STREAM_NBYTES

    def variant(self, codec_name: str, config: dict) -> Algorithm:
        try:
            cname = self._params(codec_name, config).cname
        except (KeyError, ValueError, TypeError):
            return self  # refuse() says why
        return next((a for a in ALGORITHMS.values() if isinstance(a, _Blosc) and cname in a.cnames), self)

    def _params(self, codec_name: str, config: dict) -> blosc_frame.BloscParams:
        return blosc_frame.BloscParams.from_config(config, v3=codec_name == "blosc")

    def level(self, config: dict) -> int:
        return int(config.get("clevel", 5))

    def refuse(self, codec_name: str, config: dict) -> str | None:
        try:
            p = self._params(codec_name, config)
        except (KeyError, ValueError, TypeError) as exc:
            return f"{codec_name} with configuration {config} ({type(exc).__name__}: {exc})"
        if p.cname in _BLOSC_REFUSED_CNAMES:
            return f"{codec_name} with cname '{p.cname}' ({_BLOSC_REFUSED_CNAMES[p.cname]})"
        if p.cname not in self.cnames:
            return f"{codec_name} with cname '{p.cname}'"
        if p.clevel == 0:
            return f"{codec_name} with clevel=0 (c-blosc only copies the bytes: nothing for the GPU to do)"
        if p.shuffle not in (blosc_frame.NOSHUFFLE, blosc_frame.SHUFFLE, blosc_frame.BITSHUFFLE):
            return f"{codec_name} with shuffle={p.shuffle}"
        return None

    def params(self, codec_name: str, config: dict) -> Hashable:
        return self._params(codec_name, config)

    def refuse_plan(self, plan: GpuCodecPlan) -> str | None:
        n = plan.chunk_nbytes
        if n < blosc_frame.MIN_BUFFERSIZE:
            return (
                f"blosc chunks of {n} bytes are not written on the GPU path: c-blosc stores chunks of "
                f"fewer than {blosc_frame.MIN_BUFFERSIZE} bytes uncompressed, nothing for the GPU to do"
            )
        if n > blosc_frame.MAX_BUFFERSIZE:
            return f"blosc chunks of {n} bytes are not written on the GPU path: c-blosc's limit is {blosc_frame.MAX_BUFFERSIZE}"
        return None

    def _layout(self, plan: GpuCodecPlan) -> blosc_frame.BloscLayout:
        return blosc_frame.layout(plan.params, plan.chunk_nbytes)

    def streams(self, plan: GpuCodecPlan) -> tuple[np.ndarray, np.ndarray]:
        lay = self._layout(plan)
        return lay.offsets, lay.sizes

    def transform(self, xp: Any, plan: GpuCodecPlan, rows: Callable[[], Any]) -> Any:
        lay = self._layout(plan)
        shuffled = lay.shuffle == blosc_frame.BITSHUFFLE or (lay.shuffle == blosc_frame.SHUFFLE and lay.typesize > 1)
        return blosc_frame.shuffle_blocks(xp, rows(), lay) if shuffled else None

    def reference(self, level: int | None) -> Any:
        return ALGORITHMS[self.inner].reference(level)

    def raw(self, encoded: Blob) -> Blob:
        return ALGORITHMS[self.inner].raw(encoded)

    def frame(self, raw: Sequence[Blob], plan: GpuCodecPlan, prepared: Any, source: BatchInput) -> list[Blob]:
        return blosc_frame.frame_chunks(self._layout(plan), raw, source)


@register
class BloscZstd(_Blosc):
    """Blosc with ``cname="zstd"``: each block one zstd frame (nvCOMP Zstd RAW), never split (as c-blosc)."""

    name = "blosc-zstd"
    cnames = ("zstd",)
    inner = "zstd"
    nvcomp_names = Zstd.nvcomp_names

    def reference(self, level: int | None) -> Any:
        import numcodecs

        clevel = 5 if level is None else level
        return numcodecs.Zstd(level=2 * clevel - 1 if clevel < 9 else 22)  # c-blosc's zstd_wrap_compress


@register
class BloscLZ4(_Blosc):
    """Blosc with ``cname="lz4"`` or ``"lz4hc"`` (both store LZ4's format): each stream one raw LZ4
    block (nvCOMP LZ4 RAW), blocks split into ``typesize`` streams as c-blosc splits them."""

    name = "blosc-lz4"
    cnames = ("lz4", "lz4hc")
    inner = "lz4"
    nvcomp_names = LZ4.nvcomp_names

    def reference(self, level: int | None) -> Any:
        import numcodecs

        clevel = 5 if level is None else level
        return numcodecs.LZ4(acceleration=max(1, 10 - clevel))  # c-blosc's get_accel
