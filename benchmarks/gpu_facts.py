"""The GPU facts a benchmark's JSON records: device, driver, CUDA libraries, and the gpu engine's
default settings, or why no GPU was usable. Never fails: a missing piece is ``None``."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess


def _nvidia_smi() -> list[dict]:
    """One entry per device from ``nvidia-smi`` (name, driver, memory), or [] without it."""
    query = "name,driver_version,memory.total"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return [
            dict(zip(("name", "driver", "memory"), (p.strip() for p in line.split(",")), strict=False))
            for line in text.splitlines()
            if line.strip()
        ]
    return []


def gpu_facts() -> dict:
    """Device name, driver and library versions (cupy, nvCOMP, kvikio), the gpu engine's defaults."""
    from hdmf_zarr_parallel.options import WriteOptions

    facts: dict = {"nvidia_smi": _nvidia_smi()}
    defaults = WriteOptions()
    facts["gpu_defaults"] = {
        f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults) if f.name.startswith("gpu_")
    }
    try:
        from hdmf_zarr_parallel.gpu.status import gpu_status

        status = gpu_status()
    except Exception as exc:  # noqa: BLE001 - facts are recorded, not required
        facts.update(available=False, reason=f"{type(exc).__name__}: {exc}")
        return facts
    facts.update(
        available=status.available,
        reason=None if status.available else status.reason,
        device=getattr(status, "device_name", None),
        cupy=str(getattr(status, "cupy_version", None)),
        nvcomp=str(getattr(status, "nvcomp_version", None)),
        kvikio=getattr(status, "kvikio_version", None),
    )
    return facts
