"""Random-access datasets: cut into unit-aligned tiles, submitted round robin across datasets.

A tile is a region of whole write units (no unit is shared by two tiles, so every unit has
one owner) that follows the iterator's buffer shape and is sized by the engine
(:meth:`~..engines.base.Engine.tile_bytes`). One dispatcher thread per write takes each
dataset as it arrives and submits one tile of every active dataset in turn, so that all of
them progress together while hdmf-zarr keeps adding more; the byte budget paces it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..engines.base import Route
from ..options import WriteOptions
from .budget import WriteCancelled
from .plan import Region, choose_tile_units

if TYPE_CHECKING:
    from .pipeline import PipelineRun


def plan_tiles(route: Route, options: WriteOptions) -> Iterator[Region]:
    """The unit-aligned region tasks of a random-access dataset, sized by its engine for its route."""
    dataset, target = route.dataset, route.dataset.target
    if target.grid.is_empty:
        return iter(())
    tile_bytes = route.engine.route_tile_bytes(route, options, target.nbytes)
    units = choose_tile_units(target.grid, dataset.source.buffer_shape, target.dtype.itemsize, tile_bytes)
    return target.grid.tiles(units)


class Dispatcher:
    """Submits the tiles of random-access datasets, round robin across every dataset known so far,
    so that all of them progress together while more keep arriving."""

    def __init__(self, run: PipelineRun) -> None:
        self._run = run
        self._arrivals: queue.SimpleQueue[Route | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="hzp-dispatch", daemon=True)
        self._thread.start()

    def add(self, route: Route) -> None:
        self._arrivals.put(route)

    def close(self) -> None:
        self._arrivals.put(None)

    def join(self, stop: threading.Event, deadline: float | None = None) -> None:
        while self._thread.is_alive() and not stop.is_set():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return
            self._thread.join(timeout=left)

    def _loop(self) -> None:
        run = self._run
        active: list[Iterator[tuple[Route, Region]]] = []
        closed = False
        try:
            while not run.stop.is_set():
                while True:  # take every dataset that has arrived; wait for one only when idle
                    try:
                        route = self._arrivals.get(block=not active and not closed, timeout=None)
                    except queue.Empty:
                        break
                    if route is None:
                        closed = True
                        break
                    tiles = plan_tiles(route, run.options)
                    active.append(zip(itertools.repeat(route), tiles))
                if not active:
                    if closed:
                        return
                    continue
                for stream in list(active):
                    item = next(stream, None)
                    if item is None:
                        active.remove(stream)
                        continue
                    route, region = item
                    nbytes = route.dataset.target.region_nbytes(region)
                    run.submit(lambda w=route, r=region: w.submit_region(r), nbytes, nbytes, tally=route.tally)
        except WriteCancelled:
            pass
        except BaseException as exc:
            run.fail(exc)
