"""A stored object's bytes as consecutive pieces, written where they lie instead of joined first.

A shard the GPU path assembles is its encoded inner chunks, memoryviews into the batch's host
buffer, followed by its index. Joining them into one ``bytes`` copies every compressed byte, and
``bytes.join`` holds the GIL for that copy unless every piece is a ``bytes`` object. A file
sink hands the pieces to ``os.writev`` instead (one system call, the GIL released); anything
that needs one buffer (zarr's store API, ``bytes(parts)``, ``memoryview(parts)``) gets the
pieces joined once, through the buffer protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Parts:
    """``pieces`` (bytes-like, in order) that make up one object's bytes; ``nbytes`` bytes in all."""

    __slots__ = ("pieces", "nbytes", "_joined")

    def __init__(self, pieces: Sequence[Any], nbytes: int) -> None:
        self.pieces = pieces
        self.nbytes = nbytes
        self._joined: bytes | None = None

    def __len__(self) -> int:
        return self.nbytes

    def joined(self) -> bytes:
        """The pieces as one ``bytes`` object, made on first use and kept (a buffer handed out
        through :meth:`__buffer__` must stay valid as long as this object lives)."""
        if self._joined is None:
            self._joined = b"".join(self.pieces)
        return self._joined

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self.joined())

    def __bytes__(self) -> bytes:
        return self.joined()

    def __repr__(self) -> str:
        return f"Parts({len(self.pieces)} pieces, {self.nbytes} bytes)"
