"""Installed versions of distributions, by name, for ``hdmf-zarr-parallel info`` and the GPU status.

Importing a package to ask its version would load it (cupy initialises CUDA); the installed
metadata answers without that. One package ships under several distribution names (cupy as
``cupy-cuda13x``, ``cupy-cuda12x`` or ``cupy``), so a lookup takes the names in order of preference.
"""

from __future__ import annotations

from importlib import metadata

CUPY_DISTRIBUTIONS = ("cupy-cuda13x", "cupy-cuda12x", "cupy")
NVCOMP_DISTRIBUTIONS = ("nvidia-nvcomp-cu13", "nvidia-nvcomp-cu12", "nvidia-nvcomp")
KVIKIO_DISTRIBUTIONS = ("kvikio-cu13", "kvikio-cu12", "kvikio")


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed; ``None`` when none is. Never raises."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata counts as not installed
            continue
    return None
