"""Fetch hdmf-zarr's sdist, extract its ``tests/unit`` and run it against our IO classes.

Used by ``tests/test_conformance_hdmf_zarr.py`` (CI) and ``scripts/run_conformance.py``
(by hand). hdmf-zarr's test code is never copied into this repository: the sdist is
downloaded at test time into an ignored cache folder (``.cache/conformance/`` by
default, reused while its SHA-256 matches), and extracted into a temporary folder for
each run. The upstream suite runs with pytest in a subprocess that loads
``hzp_conformance_plugin`` (see its docstring for how the classes are substituted
and how the substitution is proven).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

HDMF_ZARR_VERSION = "0.14.0"
SDIST_NAME = f"hdmf_zarr-{HDMF_ZARR_VERSION}.tar.gz"
#: SHA-256 of the PyPI sdist hdmf_zarr-0.14.0.tar.gz.
SDIST_SHA256 = "f0a31dff2fa86689ef664333d56385447a0739470458bb115a9cd787cd5ef8c9"

#: A run must have at least this many upstream tests pass (the stock baseline here
#: passes 596 with the deselections in deselected.py, without scipy). A broken download,
#: a collection error or a wholesale skip can therefore never pass as success.
MIN_PASSED = 580

DEFAULT_CACHE = REPO_ROOT / ".cache" / "conformance"
SUBPROCESS_TIMEOUT_S = 900


class SdistUnavailable(RuntimeError):
    """The sdist is neither cached nor downloadable because PyPI cannot be reached."""


def cache_dir() -> Path:
    return Path(os.environ.get("HZP_CONFORMANCE_CACHE", DEFAULT_CACHE))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pypi_reachable(timeout: float = 5.0) -> bool:
    for host in ("pypi.org", "files.pythonhosted.org"):
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                pass
        except OSError:
            return False
    return True


def fetch_sdist(cache: Path | None = None) -> Path:
    """Return the path of the verified sdist, downloading it with pip if it is not cached.

    Raises :class:`SdistUnavailable` only when PyPI cannot be reached (no network);
    any other failure (pip error, hash mismatch) raises ``RuntimeError``.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST_NAME
    if sdist.is_file() and _sha256(sdist) == SDIST_SHA256:
        return sdist
    sdist.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
        "--disable-pip-version-check", "-q", f"hdmf-zarr=={HDMF_ZARR_VERSION}", "-d", str(cache),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not sdist.is_file():
        if not _pypi_reachable():
            raise SdistUnavailable(
                f"cannot download hdmf-zarr {HDMF_ZARR_VERSION} sdist: PyPI is unreachable (no network?)"
            )
        raise RuntimeError(f"pip download of hdmf-zarr {HDMF_ZARR_VERSION} failed:\n{proc.stdout}\n{proc.stderr}")
    actual = _sha256(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise RuntimeError(f"{SDIST_NAME}: SHA-256 {actual} != expected {SDIST_SHA256}")
    return sdist


def extract_unit_tests(sdist: Path, dest: Path) -> Path:
    """Extract only ``tests/`` of the sdist into *dest*; return the extracted sdist root."""
    prefix = f"hdmf_zarr-{HDMF_ZARR_VERSION}/"
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix + "tests/")]
        if not members:
            raise RuntimeError(f"{sdist} has no {prefix}tests/")
        tar.extractall(dest, members=members, filter="data")
    root = dest / prefix.rstrip("/")
    if not (root / "tests" / "unit").is_dir():
        raise RuntimeError(f"{sdist} has no tests/unit")
    return root


@dataclass
class TestOutcome:
    nodeid: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""
    details: str = ""


@dataclass
class ConformanceResult:
    returncode: int
    wall_s: float
    outcomes: list[TestOutcome]
    summary: dict
    stdout: str
    stderr: str
    command: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def problems(self) -> list[TestOutcome]:
        return [o for o in self.outcomes if o.outcome in ("failed", "error")]

    @property
    def summary_line(self) -> str:
        lines = [ln for ln in self.stdout.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def _nodeid(case: ET.Element) -> str:
    """junit testcase -> pytest node id relative to the sdist root.

    ``classname`` is ``tests.unit.test_x.TestClass``; the module is the first part
    named ``test_*`` (the ``file`` attribute is not used: for inherited tests it names
    the defining module, e.g. ``base_tests_zarrio.py``, not the collecting one).
    """
    parts, name = case.get("classname", "").split("."), case.get("name", "")
    for i, part in enumerate(parts):
        if part.startswith("test_"):
            return "::".join(["/".join(parts[: i + 1]) + ".py", *parts[i + 1 :], name])
    return "::".join([*parts, name])


def _key_lines(text: str, limit: int = 14) -> str:
    """The informative lines of a pytest long traceback: locations and ``E`` lines."""
    keep = [
        ln
        for ln in text.splitlines()
        if ln.startswith(("E ", "E\t")) or (":" in ln and ln.split(":")[0].endswith(".py"))
    ]
    return "\n".join(keep[-limit:])


def parse_junit(path: Path) -> list[TestOutcome]:
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    results: dict[str, TestOutcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        nodeid = _nodeid(case)
        outcome, message, details = "passed", "", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                message, details = child.get("message", ""), child.text or ""
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        prev = results.get(nodeid)
        if prev is None or rank[outcome] > rank[prev.outcome]:
            results[nodeid] = TestOutcome(nodeid, outcome, message, details)
    return list(results.values())


def run_upstream_suite(
    workdir: Path,
    target: str = "parallel",
    sdist: Path | None = None,
    extra_args: list[str] | None = None,
    timeout: float = SUBPROCESS_TIMEOUT_S,
) -> ConformanceResult:
    """Run hdmf-zarr's ``tests/unit`` with the plugin in a subprocess; *workdir* must be empty/scratch."""
    workdir.mkdir(parents=True, exist_ok=True)
    sdist = sdist or fetch_sdist()
    root = extract_unit_tests(sdist, workdir / "src")
    # A generated, minimal config: keeps this repository's pytest settings (and any
    # plugin options they name) out of the upstream run and fixes the node ids' root.
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n")
    junit = workdir / "junit.xml"
    summary_path = workdir / "summary.json"
    run_cwd = workdir / "cwd"  # upstream tests create files relative to the cwd
    run_cwd.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", str(root / "tests" / "unit"),
        "-c", str(ini), "--rootdir", str(root),
        "-p", "hzp_conformance_plugin", "-p", "no:cacheprovider",
        "-q", "-rfE", "--tb=long",
        f"--junitxml={junit}", "-o", "junit_family=xunit1",
        *(extra_args or []),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["HZP_CONFORMANCE_TARGET"] = target
    env["HZP_CONFORMANCE_SUMMARY"] = str(summary_path)
    env["NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE"] = "1"  # see deselected.py's docstring
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=run_cwd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - start
    outcomes = parse_junit(junit) if junit.is_file() else []
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return ConformanceResult(proc.returncode, wall, outcomes, summary, proc.stdout, proc.stderr, cmd)


def format_report(result: ConformanceResult) -> str:
    s = result.summary
    lines = [
        f"hdmf-zarr {HDMF_ZARR_VERSION} tests/unit conformance run",
        f"target: {s.get('target')}  ZarrIO -> {s.get('target_io')}  NWBZarrIO -> {s.get('target_nwb')}",
        f"returncode: {result.returncode}   wall: {result.wall_s:.1f} s",
        f"pytest: {result.summary_line}",
        f"junit testcases: {len(result.outcomes)}  passed: {result.passed}  failed: {result.count('failed')}  "
        f"errors: {result.count('error')}  skipped: {result.count('skipped')}",
        f"constructions by exact class: {s.get('constructions')}",
        f"deselected ({len(s.get('deselected', []))} tests):",
    ]
    by_reason: dict[str, list[str]] = {}
    for d in s.get("deselected", []):
        by_reason.setdefault(d["reason"], []).append(d["nodeid"])
    for reason, nodeids in by_reason.items():
        lines += [f"  - {n}" for n in nodeids]
        lines.append(f"    reason: {reason}")
    problems = result.problems
    lines.append(f"failures/errors ({len(problems)}):")
    for o in problems:
        lines.append(f"--- {o.outcome.upper()} {o.nodeid}")
        lines.append(f"    message: {o.message.splitlines()[0][:300] if o.message else ''}")
        lines += ["    " + ln for ln in _key_lines(o.details).splitlines()]
    if not result.outcomes:
        lines += ["no junit results; stdout/stderr tail:", result.stdout[-4000:], result.stderr[-4000:]]
    return "\n".join(lines) + "\n"
