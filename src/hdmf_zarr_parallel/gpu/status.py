"""Is the GPU path usable here? One cached, never-raising answer.

Importing this module imports neither cupy, nvidia.nvcomp nor kvikio: they are imported
inside :func:`gpu_status`, on its first call only, and the answer is cached.

Set ``HDMF_ZARR_PARALLEL_DISABLE_GPU=1`` to make :func:`gpu_status` report the GPU as
unavailable without importing anything.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from .._versions import KVIKIO_DISTRIBUTIONS, NVCOMP_DISTRIBUTIONS, installed_version

__all__ = ["GpuStatus", "gpu_status"]

DISABLE_ENV = "HDMF_ZARR_PARALLEL_DISABLE_GPU"


@dataclass(frozen=True)
class GpuStatus:
    """Whether the GPU (cupy + nvCOMP) path can run on this machine, and why not."""

    available: bool
    reason: str
    device_name: str | None = None
    cupy_version: str | None = None
    nvcomp_version: str | None = None
    kvikio_version: str | None = None

    def __bool__(self) -> bool:
        return self.available


_lock = threading.Lock()
_cached: GpuStatus | None = None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _probe() -> GpuStatus:
    if os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return GpuStatus(False, f"GPU disabled by {DISABLE_ENV}")

    kvikio_version = installed_version(*KVIKIO_DISTRIBUTIONS)

    # 1. cupy
    try:
        import cupy
    except ModuleNotFoundError:
        return GpuStatus(False, "cupy is not installed", kvikio_version=kvikio_version)
    except Exception as exc:  # a broken cupy install, missing CUDA libraries ...
        return GpuStatus(False, f"cupy failed to import: {_short(exc)}", kvikio_version=kvikio_version)
    cupy_version = getattr(cupy, "__version__", None)

    # 2. a device
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return GpuStatus(
            False,
            f"no CUDA device visible ({_short(exc)})",
            cupy_version=cupy_version,
            kvikio_version=kvikio_version,
        )
    if count < 1:
        return GpuStatus(False, "no CUDA device visible", cupy_version=cupy_version, kvikio_version=kvikio_version)
    device_name: str | None = None
    try:
        dev = cupy.cuda.runtime.getDevice()
        name = cupy.cuda.runtime.getDeviceProperties(dev)["name"]
        device_name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:
        return GpuStatus(
            False,
            f"CUDA device not usable ({_short(exc)})",
            cupy_version=cupy_version,
            kvikio_version=kvikio_version,
        )

    # 3. nvCOMP
    try:
        from nvidia import nvcomp
    except ModuleNotFoundError as exc:
        missing = getattr(exc, "name", "") or ""
        if missing.startswith("nvidia"):
            reason = "nvCOMP is not installed (pip install nvidia-nvcomp-cu13 or -cu12)"
        else:
            reason = f"nvCOMP failed to load: {_short(exc)}"
        return GpuStatus(False, reason, device_name, cupy_version, kvikio_version=kvikio_version)
    except Exception as exc:
        return GpuStatus(
            False,
            f"nvCOMP failed to load: {_short(exc)}",
            device_name,
            cupy_version,
            kvikio_version=kvikio_version,
        )
    nvcomp_version = str(getattr(nvcomp, "__version__", None) or installed_version(*NVCOMP_DISTRIBUTIONS))
    # Creating a codec touches the CUDA runtime nvCOMP was built against: a driver that
    # is too old shows up here, not at import.
    errors: list[str] = []
    for name in ("Zstd", "zstd", "LZ4"):
        try:
            nvcomp.Codec(algorithm=name, bitstream_kind=nvcomp.BitstreamKind.RAW)
            break
        except Exception as exc:
            errors.append(_short(exc))
    else:
        return GpuStatus(
            False,
            f"nvCOMP failed to load: {errors[0]}",
            device_name,
            cupy_version,
            nvcomp_version,
            kvikio_version,
        )
    return GpuStatus(True, "ok", device_name, cupy_version, nvcomp_version, kvikio_version)


def gpu_status(refresh: bool = False) -> GpuStatus:
    """The cached GPU status; ``refresh=True`` probes again. Never raises."""
    global _cached
    with _lock:
        if _cached is None or refresh:
            try:
                _cached = _probe()
            except BaseException as exc:  # noqa: BLE001 - must never raise
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                _cached = GpuStatus(False, f"GPU probe failed: {_short(exc)}")
        return _cached
