"""pytest plugin that runs hdmf-zarr's own unit tests against our IO classes.

It is loaded with ``-p hzp_conformance_plugin`` by the conformance harness
(``harness.py`` in this folder), in a subprocess whose ``PYTHONPATH`` contains this
folder, while pytest collects ``tests/unit`` of the hdmf-zarr sdist. It is never
loaded into the project's own test session.

What is substituted, and how
----------------------------
The upstream tests bind the classes at import time, with
``from hdmf_zarr import ZarrIO, NWBZarrIO``, ``from hdmf_zarr.backend import ZarrIO``
and ``from hdmf_zarr.nwb import NWBZarrIO`` (no test imports them inside a function).
The plugin makes those names resolve to the target classes (by default
``hdmf_zarr_parallel.ParallelZarrIO`` / ``NWBParallelZarrIO``):

* ``hdmf_zarr.ZarrIO``, ``hdmf_zarr.NWBZarrIO``, ``hdmf_zarr.nwb.NWBZarrIO`` and
  ``hdmf_zarr.nwb_zarrv2.NWBZarrIO`` are rebound for the whole session (from
  ``pytest_configure``, before any test module is imported). Inside hdmf-zarr the
  last two names are used only to *construct* writers/readers
  (``NWBZarrIO.read_nwb`` and ``NWBZarrV2IO.convert_to_v3``), never for
  ``isinstance`` or ``super(NWBZarrIO, ...)``; rebinding them means the v2 -> v3
  conversion tests write through our class too. hdmf-zarr's own modules never read
  the package attribute ``hdmf_zarr.ZarrIO``.
* ``hdmf_zarr.backend.ZarrIO`` is rebound **only while pytest collects**, i.e. while
  the test modules execute their imports, and restored afterwards. The reason:
  ``backend.py`` also uses that module global at run time, in
  ``ZarrIO.export``: ``isinstance(src_io, ZarrIO)``. Left rebound, exporting from
  a stock ``ZarrV2IO``/``NWBZarrV2IO`` (a subclass of the *stock* ``ZarrIO``) into
  our class would raise ``UnsupportedOperation`` - a failure made by the harness,
  not by our code. Its other run-time uses (``ZarrIO._to_v3_codecs``,
  ``ZarrIO.get_zarr_parent_path``) are static helpers our subclass inherits
  unchanged.
* Our classes subclass the stock ones and use zero-argument ``super()`` (as does
  hdmf-zarr), so rebinding names never changes their MRO. docval string types such
  as ``"ZarrIO"`` match by class name along the MRO, so they accept our classes.
* ``ZarrV2IO`` / ``NWBZarrV2IO`` (read-only readers of zarr v2 files) are not
  substituted: our package does not replace them.

Proof that the substitution is in effect (the run cannot silently test stock code)
----------------------------------------------------------------------------------
1. ``pytest_configure`` asserts the rebinding (``hdmf_zarr.ZarrIO is target`` ...),
   that the targets are proper subclasses of the stock classes and, for the default
   target, that they are ``hdmf_zarr_parallel.ParallelZarrIO`` /
   ``hdmf_zarr_parallel.NWBParallelZarrIO``.
2. After collection, every collected test module's globals are scanned: a global
   bound to the stock ``ZarrIO``/``NWBZarrIO`` aborts the session, and at least one
   module must bind each target class.
3. At run time the stock ``ZarrIO.__init__`` is wrapped (``functools.wraps`` keeps its
   docval metadata) to count constructions by exact class. At session end the
   counts are written to the JSON summary named by ``HZP_CONFORMANCE_SUMMARY``;
   the outer test requires many target instances and **zero** instances of exactly
   the stock ``ZarrIO``/``NWBZarrIO``.

Deselection
-----------
Upstream tests that cannot apply are listed, with a reason each, in
``deselected.py``. An entry that matches no collected test aborts the session, so
the list cannot go stale silently.

Environment
-----------
``HZP_CONFORMANCE_TARGET``: ``parallel`` (default) substitutes
``hdmf_zarr_parallel``'s classes; ``stock`` substitutes trivial subclasses
(``class ParallelZarrIO(ZarrIO): pass``) defined here, to measure the upstream
baseline with the very same harness.
``HZP_CONFORMANCE_SUMMARY``: path of the JSON summary to write.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deselected import active_deselections  # noqa: E402

_STATE: dict = {}


def _targets(kind: str):
    from hdmf_zarr.backend import ZarrIO
    from hdmf_zarr.nwb import NWBZarrIO

    if kind == "stock":

        class ParallelZarrIO(ZarrIO):
            """Stand-in: stock behaviour, distinct class (harness baseline)."""

        class NWBParallelZarrIO(NWBZarrIO):
            """Stand-in: stock behaviour, distinct class (harness baseline)."""

        return ParallelZarrIO, NWBParallelZarrIO
    if kind == "parallel":
        import hdmf_zarr_parallel

        return hdmf_zarr_parallel.ParallelZarrIO, hdmf_zarr_parallel.NWBParallelZarrIO
    raise pytest.UsageError(f"HZP_CONFORMANCE_TARGET must be 'parallel' or 'stock', not {kind!r}")


def _fail(msg: str):
    raise pytest.UsageError(f"hdmf-zarr conformance: substitution not in effect: {msg}")


def pytest_configure(config):
    import hdmf_zarr
    import hdmf_zarr.backend
    import hdmf_zarr.nwb
    import hdmf_zarr.nwb_zarrv2

    kind = os.environ.get("HZP_CONFORMANCE_TARGET", "parallel")
    stock_io, stock_nwb = hdmf_zarr.backend.ZarrIO, hdmf_zarr.nwb.NWBZarrIO
    if stock_io is not hdmf_zarr.ZarrIO or stock_nwb is not hdmf_zarr.NWBZarrIO:
        _fail("hdmf_zarr's classes were already rebound before the plugin ran")
    target_io, target_nwb = _targets(kind)
    for target, stock in ((target_io, stock_io), (target_nwb, stock_nwb)):
        if target is stock or not issubclass(target, stock):
            _fail(f"{target!r} must be a proper subclass of {stock!r}")
    if issubclass(target_io, stock_nwb):
        _fail(f"{target_io!r} must not be an NWB class")

    # Session-wide rebinding (see module docstring for why these are safe).
    hdmf_zarr.ZarrIO = target_io
    hdmf_zarr.NWBZarrIO = target_nwb
    hdmf_zarr.nwb.NWBZarrIO = target_nwb
    hdmf_zarr.nwb_zarrv2.NWBZarrIO = target_nwb

    # Count constructions by exact class (runtime evidence).
    counts: Counter = Counter()
    original_init = stock_io.__init__

    @functools.wraps(original_init)
    def counting_init(self, *args, **kwargs):
        counts[f"{type(self).__module__}.{type(self).__qualname__}"] += 1
        return original_init(self, *args, **kwargs)

    stock_io.__init__ = counting_init

    _STATE.update(
        kind=kind,
        stock_io=stock_io,
        stock_nwb=stock_nwb,
        target_io=target_io,
        target_nwb=target_nwb,
        original_init=original_init,
        counts=counts,
        deselected=[],
        bindings={},
    )

    # Assert at session start, after rebinding, through the public names.
    checks = {
        "hdmf_zarr.ZarrIO": hdmf_zarr.ZarrIO is target_io,
        "hdmf_zarr.NWBZarrIO": hdmf_zarr.NWBZarrIO is target_nwb,
        "hdmf_zarr.nwb.NWBZarrIO": hdmf_zarr.nwb.NWBZarrIO is target_nwb,
        "hdmf_zarr.nwb_zarrv2.NWBZarrIO": hdmf_zarr.nwb_zarrv2.NWBZarrIO is target_nwb,
    }
    if kind == "parallel":
        import hdmf_zarr_parallel

        checks["target is hdmf_zarr_parallel.ParallelZarrIO"] = target_io is hdmf_zarr_parallel.ParallelZarrIO
        checks["target is hdmf_zarr_parallel.NWBParallelZarrIO"] = target_nwb is hdmf_zarr_parallel.NWBParallelZarrIO
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        _fail(", ".join(bad))
    _STATE["checks"] = checks


def pytest_report_header(config):
    if not _STATE:
        return None
    t_io, t_nwb = _STATE["target_io"], _STATE["target_nwb"]
    return (
        f"hdmf-zarr conformance: target={_STATE['kind']}: ZarrIO -> {t_io.__module__}.{t_io.__qualname__}, "
        f"NWBZarrIO -> {t_nwb.__module__}.{t_nwb.__qualname__}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    """Rebind ``hdmf_zarr.backend.ZarrIO`` only while test modules are imported."""
    import hdmf_zarr.backend

    hdmf_zarr.backend.ZarrIO = _STATE["target_io"]
    try:
        yield
    finally:
        hdmf_zarr.backend.ZarrIO = _STATE["stock_io"]


def pytest_collection_modifyitems(session, config, items):
    stock = {id(_STATE["stock_io"]): "ZarrIO", id(_STATE["stock_nwb"]): "NWBZarrIO"}
    target = {id(_STATE["target_io"]): "ZarrIO", id(_STATE["target_nwb"]): "NWBZarrIO"}
    modules = {item.module.__name__: item.module for item in items if getattr(item, "module", None) is not None}
    bound_targets: set[str] = set()
    for name, module in sorted(modules.items()):
        found = []
        for attr, value in vars(module).items():
            if id(value) in stock:
                _fail(f"test module {name} binds the stock hdmf_zarr {stock[id(value)]} as {attr!r}")
            if id(value) in target:
                found.append(f"{attr}={target[id(value)]}")
                bound_targets.add(target[id(value)])
        if found:
            _STATE["bindings"][name] = sorted(found)
    if bound_targets != {"ZarrIO", "NWBZarrIO"}:
        _fail(f"no collected test module binds the target for {sorted({'ZarrIO', 'NWBZarrIO'} - bound_targets)}")

    rules = active_deselections()
    used: set[str] = set()
    keep, drop = [], []
    for item in items:
        rule = next((r for r in rules if item.nodeid == r or item.nodeid.startswith((r + "::", r + "["))), None)
        if rule is None:
            keep.append(item)
        else:
            used.add(rule)
            drop.append(item)
            _STATE["deselected"].append({"nodeid": item.nodeid, "reason": rules[rule]})
    stale = sorted(set(rules) - used)
    if stale:
        raise pytest.UsageError(f"hdmf-zarr conformance: deselect entries match no collected test: {stale}")
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _STATE["collected_after_deselect"] = len(keep)


def pytest_sessionfinish(session, exitstatus):
    if not _STATE:
        return
    _STATE["stock_io"].__init__ = _STATE["original_init"]
    path = os.environ.get("HZP_CONFORMANCE_SUMMARY")
    if not path:
        return

    def qual(cls):
        return f"{cls.__module__}.{cls.__qualname__}"

    summary = {
        "target": _STATE["kind"],
        "target_io": qual(_STATE["target_io"]),
        "target_nwb": qual(_STATE["target_nwb"]),
        "stock_io": qual(_STATE["stock_io"]),
        "stock_nwb": qual(_STATE["stock_nwb"]),
        "checks": _STATE["checks"],
        "module_bindings": _STATE["bindings"],
        "constructions": dict(_STATE["counts"]),
        "deselected": _STATE["deselected"],
        "collected_after_deselect": _STATE.get("collected_after_deselect", 0),
        "exitstatus": int(exitstatus),
    }
    Path(path).write_text(json.dumps(summary, indent=2, sort_keys=True))
