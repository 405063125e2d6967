"""One chunk at a time in the calling thread: stock hdmf-zarr's behaviour, for baselines and debugging."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from ..write.plan import Region
from .base import Engine, Route, Units


def _run_now(fn: Callable[..., int], *args) -> Future[int]:
    future: Future[int] = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # the pipeline re-raises it in the caller
        future.set_exception(exc)
    return future


class SerialEngine(Engine):
    name = "serial"

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__(1)

    def submit_region(self, route: Route, region: Region) -> Future[int]:
        return _run_now(route.dataset.write_region, region)

    def submit_units(self, route: Route, units: Units) -> Future[int]:
        return _run_now(route.dataset.target.write_units, units)

    def shutdown(self, cancel: bool = False) -> None:
        pass
