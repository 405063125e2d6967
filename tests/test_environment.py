"""environment.yml must stay in step with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAME = re.compile(r"^\s*(?:[\w.-]+::)?([A-Za-z0-9][A-Za-z0-9._-]*)")
THIS_PACKAGE = re.compile(r"^(?:(?:-e|--editable)\s+)?\.(?:/)?(?:\[[\w\s,.-]+\])?$")


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def conda_specs(env: dict) -> list[str]:
    return [dep for dep in env["dependencies"] if isinstance(dep, str)]


def pip_specs(env: dict) -> list[str]:
    sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return [str(item).strip() for item in sections[0]]


def conda_name(spec: str) -> str:
    match = CONDA_NAME.match(spec)
    assert match, f"cannot parse conda spec {spec!r}"
    return canonicalize_name(match.group(1))


def named_packages(env: dict) -> set[str]:
    names = {conda_name(spec) for spec in conda_specs(env)}
    names |= {canonicalize_name(Requirement(spec).name) for spec in pip_specs(env) if not THIS_PACKAGE.match(spec)}
    return names


def test_environment_name_and_channels(environment):
    assert environment["name"] == "hdmf-zarr-parallel"
    assert "conda-forge" in environment["channels"]


def test_python_is_at_least_312(environment, pyproject):
    pythons = [spec for spec in conda_specs(environment) if conda_name(spec) == "python"]
    assert len(pythons) == 1, "environment.yml must name python exactly once"
    version = re.search(r"(\d+\.\d+)", pythons[0])
    assert version, f"python must be pinned to a version: {pythons[0]!r}"
    assert Version(version.group(1)) >= Version("3.12")
    assert pyproject["project"]["requires-python"] == ">=3.12"


def test_every_runtime_dependency_is_named(environment, pyproject):
    required = {canonicalize_name(Requirement(dep).name) for dep in pyproject["project"]["dependencies"]}
    missing = required - named_packages(environment)
    assert not missing, f"environment.yml lacks runtime dependencies of pyproject.toml: {sorted(missing)}"


def test_pip_ranges_match_pyproject(environment, pyproject):
    """A runtime dependency installed by pip carries the same version range as in pyproject.toml."""
    wanted = {canonicalize_name(r.name): r.specifier for r in map(Requirement, pyproject["project"]["dependencies"])}
    for spec in pip_specs(environment):
        if THIS_PACKAGE.match(spec):
            continue
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in wanted:
            assert req.specifier == wanted[name], f"{spec!r} differs from pyproject.toml's {name}{wanted[name]}"


def test_pip_installs_this_package(environment):
    assert any(THIS_PACKAGE.match(spec) for spec in pip_specs(environment)), (
        "the pip section must install this package (`-e .` or `-e .[extras]`)"
    )


def test_gpu_and_notebook_packages(environment):
    names = named_packages(environment)
    assert {"cupy", "kvikio"} <= names
    assert any("nvcomp" in name for name in names)
    assert {"jupyterlab", "matplotlib", "ipywidgets"} <= names


def test_cupy_is_not_installed_twice(environment):
    """conda's cupy and pip's cupy-cuda1Nx wheel would overwrite each other's files."""
    if "cupy" in {conda_name(spec) for spec in conda_specs(environment)}:
        for spec in pip_specs(environment):
            assert "gpu" not in spec and not spec.startswith("cupy"), f"pip would install a second cupy: {spec!r}"
