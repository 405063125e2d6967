"""Two independent Zarr v3 readers for the stores our tests write: tensorstore and zarrs.

Stock zarr-python reading a store back only shows that zarr-python agrees with itself; these
readers parse ``zarr.json`` and decode every chunk and shard with their own code (C++ for
tensorstore's ``zarr3`` driver, Rust for zarrs), so a store that both read back bit-exactly
follows the Zarr v3 spec, not just zarr-python's reading of it (DESIGN.md, "Scaling facts").

* :func:`read_with_tensorstore` — ``ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
  ...}})``: the chunk-key encoding (``default``/``v2``, ``/`` or ``.``) comes from the array's
  own ``zarr.json``; an array inside a group (an NWB dataset) is opened by the path of its
  own folder.
* :func:`read_with_zarrs` — zarr-python with ``zarrs.ZarrsCodecPipeline`` in *strict* mode:
  an array zarrs cannot decode raises instead of falling back, silently, to zarr-python's own
  pipeline (zarrs' default), and the opened array's pipeline is checked to be zarrs'.
* :func:`assert_independent_readers_match` — both readers, each compared bit for bit with
  the data the test wrote. Pass the test's ``subtests`` fixture: each reader is then a
  subtest of its own, so a known reader gap skips that reader's subtest only.

Known reader gaps (:data:`KNOWN_GAPS`): a chain stock zarr-python reads but a reader does not
implement. Where an array uses one, the reader is still run and must refuse it with the
error the table names (else the table is stale and the check fails); its subtest is then
skipped with the reason. Every other error or difference fails the test.

The readers are optional at import: a missing package skips the reader's check with the
reason, unless ``HDMF_ZARR_PARALLEL_REQUIRE_READERS=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

READER_NAMES = ("tensorstore", "zarrs")


@dataclass(frozen=True)
class Gap:
    """A codec a reader does not implement, where stock zarr-python reads it."""

    reader: str
    codec: str  # the codec's name in zarr.json
    refusal: str  # a substring of the error the reader gives
    reason: str
    applies: Callable[[dict], bool] = lambda configuration: True  # on the codec's configuration


KNOWN_GAPS = (
    Gap(
        "tensorstore",
        "numcodecs.lz4",
        '"numcodecs.lz4" is not registered',
        "tensorstore's zarr3 driver has no numcodecs.lz4 (it implements no numcodecs.* codec)",
    ),
    Gap(
        "tensorstore",
        "numcodecs.zlib",
        '"numcodecs.zlib" is not registered',
        "tensorstore's zarr3 driver has no numcodecs.zlib (it implements no numcodecs.* codec)",
    ),
    Gap(
        "tensorstore",
        "numcodecs.shuffle",
        '"numcodecs.shuffle" is not registered',
        "tensorstore's zarr3 driver has no numcodecs.shuffle (it implements no numcodecs.* codec)",
    ),
    Gap("zarrs", "numcodecs.lz4", "codec numcodecs.lz4 is not supported", "zarrs has no numcodecs.lz4 codec"),
    Gap(
        "zarrs",
        "numcodecs.zlib",
        "ZlibCodecConfiguration",
        "zarrs needs the level in numcodecs.zlib's configuration (zarr writes {} for Zlib())",
        applies=lambda configuration: "level" not in configuration,
    ),
)


class ReaderMissing(Exception):
    """The reader's package is not installed."""


def _import(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ReaderMissing(
            f"{module} is not installed: the independent-reader check needs it (pip install {module})"
        ) from exc


# --------------------------------------------------------------------------- where the array is
def array_dir(target) -> Path:
    """The folder of one array: a path, a ``LocalStore`` (its root) or a ``zarr.Array`` on one."""
    if isinstance(target, zarr.Array):
        store = target.store
        if not isinstance(store, zarr.storage.LocalStore):
            raise TypeError(f"the independent readers read local folders, not a {type(store).__name__}")
        return Path(store.root) / target.path
    if isinstance(target, zarr.storage.LocalStore):
        return Path(target.root)
    return Path(target)


def codecs_of(path) -> list[dict]:
    """Every codec of the array at ``path``, those nested in a sharding codec included."""
    meta = json.loads((array_dir(path) / "zarr.json").read_text())
    if meta.get("node_type") != "array" or meta.get("zarr_format") != 3:
        raise ValueError(f"{path} is not a Zarr v3 array")

    def walk(codecs):
        for codec in codecs:
            codec = {"name": codec, "configuration": {}} if isinstance(codec, str) else codec
            yield codec
            config = codec.get("configuration") or {}
            for key in ("codecs", "index_codecs"):
                yield from walk(config.get(key, []))

    return list(walk(meta["codecs"]))


def known_gaps(path, reader: str) -> list[Gap]:
    return [
        gap
        for codec in codecs_of(path)
        for gap in KNOWN_GAPS
        if gap.reader == reader and gap.codec == codec["name"] and gap.applies(codec.get("configuration") or {})
    ]


# --------------------------------------------------------------------------- the readers
def read_with_tensorstore(path) -> np.ndarray:
    ts = _import("tensorstore")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir(path))}}
    return np.asarray(ts.open(spec, open=True, read=True).result().read().result())


def read_with_zarrs(path) -> np.ndarray:
    zarrs = _import("zarrs")
    # strict: an array zarrs cannot decode raises, it never falls back to zarr-python's pipeline
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "codec_pipeline.strict": True}):
        array = zarr.open_array(str(array_dir(path)), mode="r")
        pipeline = array.async_array.codec_pipeline
        if not isinstance(pipeline, zarrs.ZarrsCodecPipeline) or pipeline.impl is None:
            raise AssertionError(f"not read by zarrs: the array's codec pipeline is {pipeline!r}")
        return array[...]


READERS: dict[str, Callable[[Path], np.ndarray]] = {
    "tensorstore": read_with_tensorstore,
    "zarrs": read_with_zarrs,
}


def _error_text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:  # the whole chain: zarrs puts its reason in __cause__
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def assert_bit_exact(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{what}shape {got.shape}, expected {expected.shape}"
    native = expected.dtype.newbyteorder("=")
    assert got.dtype.newbyteorder("=") == native, f"{what}dtype {got.dtype}, expected {expected.dtype}"
    # bit for bit: -0.0 against 0.0 and NaN payloads too (and quick: as bytes, without copies)
    got_bytes = np.ascontiguousarray(got, dtype=native).reshape(-1).view(np.uint8)
    if np.array_equal(got_bytes, np.ascontiguousarray(expected, dtype=native).reshape(-1).view(np.uint8)):
        return
    np.testing.assert_array_equal(got, expected, err_msg=what)  # where the values differ, to say where
    raise AssertionError(f"{what}differs bitwise (equal values: -0.0 for 0.0, or another NaN)")


def check_reader(reader: str, path, expected) -> str | None:
    """Read the array at ``path`` with one reader and compare it bit for bit with ``expected``.

    Returns ``None`` when it matched, or the reason the check does not apply (a known gap the
    reader indeed refuses, or the reader is not installed); raises ``AssertionError`` otherwise."""
    path = array_dir(path)
    gaps = known_gaps(path, reader)
    try:
        got = READERS[reader](path)
    except ReaderMissing as exc:
        if os.environ.get("HDMF_ZARR_PARALLEL_REQUIRE_READERS") == "1":
            raise AssertionError(f"{exc} (HDMF_ZARR_PARALLEL_REQUIRE_READERS=1)") from exc
        return str(exc)
    except Exception as exc:
        text = _error_text(exc)
        if gaps:
            assert any(gap.refusal in text for gap in gaps), (
                f"{reader} refused {path} (known gaps: {[g.codec for g in gaps]}), but not as the gap "
                f"table says: {text}"
            )
            return "known reader gap: " + "; ".join(dict.fromkeys(gap.reason for gap in gaps))
        raise AssertionError(f"{reader} cannot read {path}: {text}") from exc
    if gaps:
        raise AssertionError(
            f"{reader} now reads {path} despite the known gaps {[g.codec for g in gaps]}: update KNOWN_GAPS"
        )
    assert_bit_exact(got, expected, f"{reader} reading {path}: ")
    return None


def assert_independent_readers_match(path, expected, subtests=None, name=None, readers=READER_NAMES) -> None:
    """Both independent readers read the array at ``path`` bit-exactly as ``expected``.

    With ``subtests`` (the pytest fixture) each reader is a subtest (labelled with ``name``,
    where a test checks several arrays), skipped alone for a known gap; without, the test is
    skipped after every reader ran, naming the gaps."""
    skipped = []
    for reader in readers:
        with _subtest(subtests, reader=reader, **({} if name is None else {"array": name})):
            reason = check_reader(reader, path, expected)
            if reason is not None:
                if subtests is not None:
                    pytest.skip(f"{reader}: {reason}")
                skipped.append(f"{reader}: {reason}")
    if skipped:
        pytest.skip(" | ".join(skipped))


@contextlib.contextmanager
def _subtest(subtests, **kwargs) -> Iterator[None]:
    if subtests is None:
        yield
    else:
        with subtests.test(**kwargs):
            yield
