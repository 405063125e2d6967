"""The Dask engine: the same writer on a ``distributed`` cluster (dask-jobqueue, dask-cuda, LocalCluster).

Every task carries its dataset (the pickled :class:`~..write.dataset.DatasetWrite`: iterator
and zarr array handle, a few kB for an iterator that reopens its source by path; for a
sequential iterator only its :class:`~..write.target.DatasetTarget`) and its region or units; each worker process unpickles a dataset once and keeps it for the following
tasks. Tasks have no dependencies, so Dask spreads them over all workers, and a task
whose worker is lost can be rerun anywhere.

- **Random-access iterators** (``GenericDataChunkIterator``): every task reads one
  unit-aligned (chunk- or shard-aligned) tile from the iterator *on the worker*,
  encodes it (on the worker's GPU or with the array's own zarr codecs, see below) and
  stores it. The iterator must pickle, and not with its data inside (that would send
  the data with every task).
- **Sequential iterators** (``DataChunkIterator`` and any other
  ``AbstractDataChunkIterator``) cannot be split: they are read in order *on the
  client*, which assembles whole chunks (or shards); each batch of whole units is sent
  to a worker, which encodes and stores it. These iterators need not pickle.

The invariants hold across workers: tasks are unit-aligned so no two tasks share a
chunk or shard key; the pipeline's byte budget bounds what the whole cluster holds in
flight (so each worker holds at most a few tiles); the first failing task stops the
write and re-raises in the caller as :class:`ChunkWriteError` naming the dataset and
chunk or region. A worker lost mid-write has its tasks rescheduled by Dask (up to
``distributed.scheduler.allowed-failures`` times); a rerun task rewrites every unit of
its region whole, and each store write replaces a key with complete bytes.

**Where a task encodes** (``gpu=``): with ``"auto"`` (the default), a worker whose
process sees a usable GPU (:func:`~hdmf_zarr_parallel.gpu.status.gpu_status`, probed
once per worker process; dask-cuda's ``LocalCUDACluster`` gives each worker its own GPU)
encodes the datasets whose codec chain nvCOMP can produce
(:func:`~hdmf_zarr_parallel.gpu.plan.classify`, decided once per dataset on the
client) on that GPU, with the GPU engine's own data path
(:mod:`hdmf_zarr_parallel.gpu.datapath`, through
:class:`~hdmf_zarr_parallel.gpu.worker_lanes.WorkerGpu`, in the same task); every other
task encodes with the CPU codecs. ``"never"`` keeps every worker on the CPU codecs;
``"always"`` uses the GPU path for every GPU-capable dataset on every worker without
asking ``gpu_status`` (a worker that cannot start a lane fails the write with a
``ChunkWriteError`` saying so).
Each worker thread keeps one lane (CUDA stream, pinned staging, nvCOMP encoders), made
by ``gpu_lane`` (default :class:`~hdmf_zarr_parallel.gpu.lanes.NvcompLane`;
tests pass a ``HostLane``); :meth:`DaskEngine.shutdown` closes the lanes of every worker
(a lane still in use by a task closes when that task ends; see
:mod:`hdmf_zarr_parallel.gpu.worker_lanes`). Nothing of :mod:`hdmf_zarr_parallel.gpu` is
imported with ``gpu="never"``.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ChunkWriteError
from ..options import WriteOptions
from ..write.dataset import DatasetWrite
from ..write.plan import Coords, Region, format_region
from ..write.target import Units
from . import dask_worker
from .base import Engine, Route, tile_bytes_for
from .reach import describe_store, unreachable_reason

if TYPE_CHECKING:
    from ..gpu.lanes import Lane
    from ..gpu.worker_lanes import WorkerGpu

logger = logging.getLogger(__name__)

LARGE_PAYLOAD_BYTES = 1 << 20  # a pickled dataset this big probably carries its data: warn
MAX_PAYLOAD_BYTES = 16 << 20  # ... and this big is refused: every task would carry it
GPU_MODES = ("auto", "never", "always")


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("engine='dask' needs dask.distributed: pip install 'hdmf-zarr-parallel[dask]'") from exc
    return distributed


def resolve_client(client: Any = None):
    """The client to use: the one given, else the current one; a clear error when there is none."""
    distributed = _import_distributed()
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            raise ValueError(
                "engine='dask' needs a distributed.Client: pass client=... or create one first "
                "(e.g. `Client(LocalCluster())`); no current client was found"
            ) from None
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    return client


def _metadata_key(array: Any) -> str:
    return f"{array.path}/zarr.json" if array.path else "zarr.json"


@dataclass(eq=False)
class DaskRoute(Route):
    """A dataset on the cluster: the token workers cache it by, its pickled bytes, and what its
    tasks need to encode on a worker's GPU (``None``: the CPU codecs)."""

    token: str = ""
    payload: bytes = b""
    gpu: WorkerGpu | None = None


class DaskEngine(Engine):
    """Runs region and unit tasks on the workers of a ``distributed.Client``.

    ``gpu`` says where tasks encode: ``"auto"`` (default) on the worker's GPU when its process
    sees a usable one and the dataset's codec chain is GPU-capable, else with the CPU codecs;
    ``"never"``: always the CPU codecs; ``"always"``: the GPU path for every GPU-capable dataset
    on every worker, without checking for a GPU. ``gpu_lane`` makes a worker thread's lane: a
    picklable zero-argument callable returning a :class:`~hdmf_zarr_parallel.gpu.lanes.Lane` (default
    :class:`~hdmf_zarr_parallel.gpu.lanes.NvcompLane`; a ``HostLane`` runs the GPU data path on the
    host, for tests).
    """

    name = "dask"

    def __init__(
        self, client: Any, retries: int = 0, gpu: str = "auto", gpu_lane: Callable[[], Lane] | None = None
    ) -> None:
        if gpu not in GPU_MODES:
            raise ValueError(f"gpu must be one of {', '.join(map(repr, GPU_MODES))}; got {gpu!r}")
        lane_bytes = None
        if gpu != "never" or gpu_lane is not None:
            from ..gpu.worker_lanes import pickled_factory

            lane_bytes = pickled_factory(gpu_lane)
        self.client = resolve_client(client)
        super().__init__(max_workers=0)
        self.retries = retries  # for exceptions; lost workers are rescheduled by Dask regardless
        self.gpu = gpu
        self._lane_bytes = lane_bytes
        self._threads = 0
        self._tokens: list[str] = []  # of the datasets admitted this write, for the workers to forget
        self._pending: dict[str, Any] = {}  # key -> distributed.Future of a running task
        self._checked_stores: set[str] = set()  # stores every worker was seen to reach, this write
        self._cancelling = False

    @classmethod
    def create(cls, options: WriteOptions) -> DaskEngine:
        """The engine for ``engine="dask"``; without a client (given or current) it refuses clearly."""
        return cls(options.client, gpu=options.dask_gpu)

    # -- set-up ---------------------------------------------------------------------------------
    def _cluster_threads(self) -> dict[str, int]:
        return dict(self.client.nthreads())

    def describe(self) -> str:
        threads = self._cluster_threads() if self.client.status == "running" else {}
        return f"dask ({len(threads)} workers, {sum(threads.values())} threads)"

    def admit(self, dataset: DatasetWrite) -> DaskRoute:
        """One dataset joining a write, checked before any of its data moves: refused, with a clear
        error naming it, when workers cannot reach its store or its iterator cannot travel to them."""
        self._connect()
        payload = self._payload(dataset)
        store = describe_store(dataset.target.array.store)
        if store not in self._checked_stores:
            self._check_reachable(dataset)
            self._checked_stores.add(store)
        route = DaskRoute(self, dataset, uuid.uuid4().hex, payload, self._gpu_task(dataset))
        self._tokens.append(route.token)
        logger.debug("dask engine: dataset '%s' admitted on %s", dataset.name, self.describe())
        return route

    def _gpu_task(self, dataset: DatasetWrite) -> WorkerGpu | None:
        """What the tasks of a GPU-capable dataset carry to encode on a worker's GPU (``None``: CPU codecs)."""
        if self.gpu == "never":
            return None
        from ..gpu.worker_lanes import WorkerGpu

        task = WorkerGpu.for_dataset(dataset.target, self.gpu, self._lane_bytes)
        if not task:
            logger.info(
                "dataset '%s' is encoded with the CPU codecs on the Dask workers: %s", dataset.name, task.reason
            )
            return None
        return task

    def _connect(self) -> None:
        """Once per write: a running client and a cluster with workers (else tasks would wait forever)."""
        if self._threads:
            return
        if self.client.status != "running":
            raise ValueError(f"engine='dask': the client is {self.client.status}, not running")
        threads = self._cluster_threads()
        if not threads:
            raise ValueError(
                "engine='dask': the cluster has no workers; start some first (e.g. cluster.scale(n); "
                "client.wait_for_workers(n))"
            )
        self._threads = sum(threads.values())
        self.max_workers = len(threads)
        self._cancelling = False
        logger.info("dask engine: writing on %s", self.describe())

    def _payload(self, dataset: DatasetWrite) -> bytes:
        """The dataset as its tasks carry it: whole for a random-access one (workers read it), only
        its target for a sequential one (the client reads it; workers encode and store)."""
        from distributed.protocol.pickle import dumps

        problem = unreachable_reason(dataset.target.array.store)
        if problem:
            raise ValueError(f"engine='dask' cannot write dataset '{dataset.name}': {problem}")
        try:
            payload = dumps(dataset if dataset.random_access else dataset.target)
        except Exception as exc:
            raise TypeError(
                f"engine='dask' cannot write dataset '{dataset.name}': its iterator "
                f"({type(dataset.source.iterator).__name__}) cannot be pickled to reach the workers ({exc!r}); "
                "make it picklable, or use engine='threads'"
            ) from exc
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"engine='dask' cannot write dataset '{dataset.name}': it pickles to "
                f"{len(payload) / 2**20:.0f} MiB (its iterator holds its data), which every task would carry "
                "to a worker; give it an iterator that reads from a file every worker can open, "
                "or use engine='threads'"
            )
        if len(payload) > LARGE_PAYLOAD_BYTES:
            warnings.warn(
                f"dataset '{dataset.name}' pickles to {len(payload) / 2**20:.1f} MiB (its iterator seems to hold "
                "its data), which every Dask task of it carries to a worker; an iterator that reads from a "
                "file the workers can open keeps tasks small",
                RuntimeWarning,
                stacklevel=3,
            )
        return payload

    def _check_reachable(self, dataset: DatasetWrite) -> None:
        """Each worker opens the dataset's store and looks for its array's metadata."""
        array = dataset.target.array
        checks = [(dataset.name, array.store, _metadata_key(array))]
        missing = self.client.run(dask_worker.unreachable_here, checks, on_error="return")
        for worker, names in missing.items():
            if isinstance(names, OSError):  # the worker left meanwhile (comm closed): nothing to check
                continue
            if isinstance(names, BaseException):
                raise ValueError(
                    f"engine='dask': worker {worker} cannot open the store of these datasets: {names!r}"
                ) from names
            if names:
                store = describe_store(array.store)
                raise ValueError(
                    f"engine='dask': worker {worker} cannot see dataset(s) {', '.join(names)} in {store}; "
                    "workers must reach the store: a path on a filesystem every worker mounts, or an fsspec URL"
                )

    def tile_bytes(self, options: WriteOptions, dataset_nbytes: int) -> int:
        """As for the other engines, with the cluster's threads as the workers."""
        return tile_bytes_for(options.max_inflight_bytes, self._threads, dataset_nbytes)

    # -- tasks ----------------------------------------------------------------------------------
    def submit_region(self, route: DaskRoute, region: Region) -> Future[int]:
        future = self._submit(dask_worker.write_region, "region", route, region)
        nbytes = route.dataset.target.region_nbytes(region)
        return self._wrap(future, route.dataset, None, f"writing region {format_region(region)}", nbytes)

    def submit_units(self, route: DaskRoute, units: Units) -> Future[int]:
        units = list(units)
        future = self._submit(dask_worker.write_units, "units", route, units)
        first = units[0][0] if units else None
        stage = "writing the assembled chunk" if len(units) == 1 else f"writing {len(units)} assembled units"
        return self._wrap(future, route.dataset, first, stage, sum(data.nbytes for _, data in units))

    def _submit(self, task: Callable[..., int], kind: str, route: DaskRoute, work: Any) -> Any:
        """One Dask task over the dataset's pickled state; never cached (``pure=False``), retried as asked."""
        key = f"hzp-{kind}-{uuid.uuid4().hex}"
        return self.client.submit(
            task, route.token, route.payload, work, route.gpu, key=key, pure=False, retries=self.retries
        )

    def _wrap(self, dfuture: Any, dataset: DatasetWrite, chunk: Coords | None, stage: str, nbytes: int) -> Future:
        """A ``concurrent.futures.Future`` that ends when the Dask task does (errors name dataset and chunk)."""
        result: Future[int] = Future()
        self._pending[dfuture.key] = dfuture

        def finished(f: Any) -> None:
            self._pending.pop(f.key, None)
            status = f.status
            if status == "finished":
                result.set_result(nbytes)
                return
            if status == "cancelled" and self._cancelling:
                result.cancel()
                return
            error: BaseException
            try:
                raised = f.exception() if status == "error" else None
            except BaseException as exc:  # the client lost the scheduler, for example
                raised = exc
            if isinstance(raised, ChunkWriteError):
                error = raised
            else:
                detail = repr(raised) if raised is not None else f"the Dask task ended as {status!r}"
                error = ChunkWriteError(dataset.name, chunk, f"{stage} on a Dask worker", detail)
                error.__cause__ = raised
            result.set_exception(error)

        dfuture.add_done_callback(finished)
        return result

    # -- tear-down ------------------------------------------------------------------------------
    def shutdown(self, cancel: bool = False) -> None:
        """Release every task; with ``cancel`` drop queued ones (a task already running on a worker
        finishes its tile: Dask cannot interrupt it). Workers forget this write's datasets and close
        their GPU lanes (a lane still in use closes when its task ends)."""
        futures = list(self._pending.values())
        tokens, self._tokens = self._tokens, []
        try:
            if cancel and futures:
                self._cancelling = True
                self.client.cancel(futures)
            if tokens and self.client.status == "running":
                self.client.run(dask_worker.release_write, tokens, on_error="return")
        except Exception:  # a client or cluster that is already gone has nothing left to release
            logger.debug("releasing Dask tasks failed", exc_info=True)
        self._pending.clear()
        self._checked_stores.clear()
        self._threads = 0
