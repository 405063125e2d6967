"""hdmf-zarr 0.14.0's own unit tests pass with ParallelZarrIO / NWBParallelZarrIO substituted.

At test time the hdmf-zarr sdist is fetched (with pip, into ``.cache/conformance/``,
reused while its SHA-256 matches), its ``tests/unit`` is extracted into a temporary
folder and run by pytest in a subprocess with ``tests/conformance/hzp_conformance_plugin.py``
loaded, which rebinds ``hdmf_zarr.ZarrIO``, ``hdmf_zarr.backend.ZarrIO``,
``hdmf_zarr.NWBZarrIO`` and ``hdmf_zarr.nwb.NWBZarrIO`` to our classes (default engine)
and proves the substitution took effect. No hdmf-zarr test code lives in this repository.
Deselected upstream tests, each with its reason, are in ``tests/conformance/deselected.py``.

Skipped only when the sdist is not cached and PyPI cannot be reached. Run by hand with
``python scripts/run_conformance.py`` (``--target stock`` for the upstream baseline).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "conformance"))
import harness  # noqa: E402
from deselected import active_deselections  # noqa: E402

pytestmark = [pytest.mark.conformance]
if importlib.util.find_spec("pytest_timeout") is not None:
    # The upstream suite takes ~2.5 min on 2 cores; the subprocess has its own timeout.
    pytestmark.append(pytest.mark.timeout(harness.SUBPROCESS_TIMEOUT_S + 120))


@pytest.fixture(scope="module")
def sdist() -> Path:
    try:
        return harness.fetch_sdist()
    except harness.SdistUnavailable as exc:
        pytest.skip(str(exc))


def test_hdmf_zarr_unit_tests_pass_with_parallel_io(sdist, tmp_path):
    result = harness.run_upstream_suite(tmp_path, target="parallel", sdist=sdist)
    report = harness.format_report(result)
    summary = result.summary

    # The plugin ran, asserted the rebinding, and found our classes in the test modules.
    assert summary, f"plugin summary missing: the plugin did not run\n{report}"
    assert summary["target"] == "parallel"
    assert summary["target_io"] == "hdmf_zarr_parallel.io.ParallelZarrIO", report
    assert summary["target_nwb"] == "hdmf_zarr_parallel.io.NWBParallelZarrIO", report
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["module_bindings"], report

    # At run time the tests built our classes, and never exactly the stock ones.
    built = summary["constructions"]
    assert built.get("hdmf_zarr_parallel.io.ParallelZarrIO", 0) >= 500, built
    assert built.get("hdmf_zarr_parallel.io.NWBParallelZarrIO", 0) >= 10, built
    assert built.get("hdmf_zarr.backend.ZarrIO", 0) == 0, built
    assert built.get("hdmf_zarr.nwb.NWBZarrIO", 0) == 0, built

    # Exactly the listed tests were deselected (the plugin aborts on stale entries).
    rules = active_deselections()
    deselected_rules = {
        next(r for r in rules if d["nodeid"] == r or d["nodeid"].startswith((r + "::", r + "[")))
        for d in summary["deselected"]
    }
    assert deselected_rules == set(rules), report

    # Everything selected passed, and enough of it ran.
    if result.problems or result.returncode != 0:
        pytest.fail(f"upstream hdmf-zarr tests failed against our classes:\n{report}", pytrace=False)
    assert result.passed >= harness.MIN_PASSED, report
    assert " passed" in result.summary_line and "failed" not in result.summary_line, report
