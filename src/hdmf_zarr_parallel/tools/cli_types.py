"""argparse types of the ``hdmf-zarr-parallel`` command line: numbers, shapes, shard specs, name lists.

Each raises ``argparse.ArgumentTypeError`` with one clear message, which the parser prints as a
one-line usage error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def number(kind: Callable[[str], float], wording: str, accept: Callable[[float], bool]):
    """An argparse type: a finite number of ``kind`` that ``accept`` takes, else one clear message."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if not accept(value) or value == float("inf"):  # NaN fails every accept
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


positive_int = number(int, "a positive integer", lambda v: v >= 1)
positive_float = number(float, "a positive number", lambda v: v > 0)
nonnegative_float = number(float, "a number >= 0", lambda v: v >= 0)


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 32768,64, got {text!r}") from None
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 32768,64, got {text!r}")
    return shape


def shards_arg(text: str) -> int | tuple[int, ...]:
    shape = shape_arg(text)
    return shape[0] if "," not in text and "x" not in text else shape


def names_arg(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names
