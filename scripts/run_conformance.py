"""Run hdmf-zarr 0.14.0's own unit tests against ParallelZarrIO / NWBParallelZarrIO and print a report.

    python scripts/run_conformance.py                 # our classes (default engine)
    python scripts/run_conformance.py --target stock  # trivial subclasses: the upstream baseline
    python scripts/run_conformance.py -- -k parallel  # extra pytest arguments for the upstream run

The report is also written to ``.cache/conformance_report.txt`` (or ``--report``).
CI runs the same harness through ``tests/test_conformance_hdmf_zarr.py`` (marker
``conformance``). Exit status: 0 when every selected upstream test passed and at
least ``MIN_PASSED`` did.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))
import harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("parallel", "stock"), default="parallel")
    parser.add_argument("--report", type=Path, default=harness.REPO_ROOT / ".cache" / "conformance_report.txt")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print its path")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for the upstream pytest run (after --)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="hzp-conformance-"))
    result = harness.run_upstream_suite(scratch, target=args.target, extra_args=args.pytest_args)
    report = harness.format_report(result)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(report)
    print(f"report written to {args.report}")
    if args.keep:
        print(f"scratch folder: {scratch}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    ok = result.returncode == 0 and not result.problems and result.passed >= harness.MIN_PASSED
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
