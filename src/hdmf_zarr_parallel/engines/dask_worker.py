"""What the Dask engine runs on its workers: the write tasks, and each worker's cache of datasets.

A task carries its dataset pickled (see :mod:`.dask`); each worker process unpickles a
dataset once, keeps it for the following tasks (at most :data:`WORKER_CACHE`) and forgets it
when the write ends. These functions are sent to the workers by reference, so they live at
module level, and import nothing of :mod:`hdmf_zarr_parallel.gpu` unless a task encodes on a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..write.dataset import DatasetWrite
from ..write.plan import Region
from ..write.target import DatasetTarget, Units

if TYPE_CHECKING:
    from ..gpu.worker_lanes import WorkerGpu

WORKER_CACHE = 256  # datasets each worker process keeps unpickled
_WORKER_LANES = importlib.util.resolve_name("..gpu.worker_lanes", __package__)


def unreachable_here(checks: list[tuple[str, Any, str]]) -> list[str]:
    """On each worker: the datasets whose array metadata this worker cannot see."""
    from .._zarr import sync

    missing = []
    for name, store, key in checks:
        try:
            if not sync(store.exists(key)):
                missing.append(name)
        except Exception as exc:
            missing.append(f"{name} ({exc!r})")
    return missing


_WORKER_PAYLOADS: OrderedDict[str, Any] = OrderedDict()
_WORKER_LOCK = threading.Lock()


def _unpickled(token: str, payload: bytes) -> Any:
    """This worker's copy of a dataset (a :class:`DatasetWrite`, or the :class:`DatasetTarget`
    of a sequential one), unpickled on first use and kept for the next tasks."""
    with _WORKER_LOCK:
        value = _WORKER_PAYLOADS.get(token)
        if value is not None:
            _WORKER_PAYLOADS.move_to_end(token)
            return value
    from distributed.protocol.pickle import loads

    value = loads(payload)
    with _WORKER_LOCK:
        value = _WORKER_PAYLOADS.setdefault(token, value)  # another thread may have been first
        while len(_WORKER_PAYLOADS) > WORKER_CACHE:
            _WORKER_PAYLOADS.popitem(last=False)
    return value


def forget(tokens: list[str]) -> None:
    with _WORKER_LOCK:
        for token in tokens:
            _WORKER_PAYLOADS.pop(token, None)


# -- the tasks -----------------------------------------------------------------------------------
def write_region(token: str, payload: bytes, region: Region, gpu: WorkerGpu | None = None) -> int:
    dataset: DatasetWrite = _unpickled(token, payload)
    if gpu is not None and gpu.here():
        return gpu.write_region(dataset, region)
    return dataset.write_region(region)


def write_units(token: str, payload: bytes, units: Units, gpu: WorkerGpu | None = None) -> int:
    target: DatasetTarget = _unpickled(token, payload)
    if gpu is not None and units and gpu.here():
        return gpu.write_units(target, units)
    return target.write_units(units)


def release_write(tokens: list[str]) -> int:
    """At the end of a write, on each worker: forget its datasets and close the GPU lanes
    (a worker that never imported the lanes' module has none)."""
    forget(tokens)
    lanes = sys.modules.get(_WORKER_LANES)
    return lanes.drop_lanes() if lanes is not None else 0
