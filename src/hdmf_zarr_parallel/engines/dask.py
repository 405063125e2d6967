"""The Dask engine: the same writer on a ``distributed`` cluster (dask-jobqueue, dask-cuda, LocalCluster).

Every task carries its dataset (the pickled :class:`DatasetWriter`: iterator and zarr
array handle, a few kB for an iterator that reopens its source by path) and its
region; each worker process unpickles a dataset once and keeps it for the following
tasks. Tasks have no dependencies, so Dask spreads them over all workers, and a task
whose worker is lost can be rerun anywhere.

- **Random-access iterators** (``GenericDataChunkIterator``): every task reads one
  unit-aligned (chunk- or shard-aligned) tile from the iterator *on the worker*,
  encodes it with the array's own zarr codecs and stores it. The iterator must pickle,
  and not with its data inside (that would send the data with every task).
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

Workers encode with the CPU codecs; worker GPU encoding (nvCOMP on dask-cuda workers)
is not implemented yet.
"""

from __future__ import annotations

import logging
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..dataset import DatasetWriter
from ..errors import ChunkWriteError
from ..options import WriteOptions
from ..plan import Coords, Region
from .base import MAX_TILE_BYTES, Engine, write_units

logger = logging.getLogger(__name__)

LARGE_PAYLOAD_BYTES = 1 << 20  # a pickled dataset this big probably carries its data: warn
MAX_PAYLOAD_BYTES = 16 << 20  # ... and this big is refused: every task would carry it
WORKER_CACHE = 256  # datasets each worker process keeps unpickled


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


def store_problem(store: Any) -> str | None:
    """Why Dask workers cannot write into ``store``, or ``None`` if they can."""
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(store, LocalStore):
        return None  # reachable when its path is on a filesystem every worker mounts (checked on the workers)
    if isinstance(store, FsspecStore):
        protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
        if "memory" in protocols:
            return "an fsspec memory:// filesystem lives in this process only"
        return None
    return (
        f"its store ({type(store).__name__}) cannot be reached from Dask workers; write to a path on a "
        "filesystem every worker mounts, or to an fsspec URL (e.g. 's3://bucket/file.nwb.zarr')"
    )


def _metadata_key(writer: DatasetWriter) -> str:
    path = writer.array.path
    return f"{path}/zarr.json" if path else "zarr.json"


def _describe_store(store: Any) -> str:
    root = getattr(store, "root", None) or getattr(store, "path", None)
    return f"{type(store).__name__}({str(root)!r})" if root is not None else type(store).__name__


# -- what runs on the workers --------------------------------------------------------------------
def _unreachable(checks: list[tuple[str, Any, str]]) -> list[str]:
    """On each worker: the datasets whose array metadata this worker cannot see."""
    from zarr.core.sync import sync

    missing = []
    for name, store, key in checks:
        try:
            if not sync(store.exists(key)):
                missing.append(name)
        except Exception as exc:
            missing.append(f"{name} ({exc!r})")
    return missing


_WORKER_WRITERS: OrderedDict[str, DatasetWriter] = OrderedDict()
_WORKER_LOCK = threading.Lock()


def _worker_writer(token: str, payload: bytes) -> DatasetWriter:
    """This worker's copy of a dataset, unpickled on first use and kept for the next tasks."""
    with _WORKER_LOCK:
        writer = _WORKER_WRITERS.get(token)
        if writer is not None:
            _WORKER_WRITERS.move_to_end(token)
            return writer
    from distributed.protocol.pickle import loads

    writer = loads(payload)
    with _WORKER_LOCK:
        writer = _WORKER_WRITERS.setdefault(token, writer)  # another thread may have been first
        while len(_WORKER_WRITERS) > WORKER_CACHE:
            _WORKER_WRITERS.popitem(last=False)
    return writer


def _forget_writers(tokens: list[str]) -> None:
    with _WORKER_LOCK:
        for token in tokens:
            _WORKER_WRITERS.pop(token, None)


def _write_region(token: str, payload: bytes, region: Region) -> int:
    return _worker_writer(token, payload).write_region(region)


def _write_units(token: str, payload: bytes, units: Sequence[tuple[Coords, np.ndarray]]) -> int:
    return write_units(_worker_writer(token, payload), units)


def _store_only(writer: DatasetWriter) -> DatasetWriter:
    """A copy of a sequential dataset's writer without its iterator: workers only encode and store."""
    clone = object.__new__(DatasetWriter)
    clone.__dict__.update(writer.__getstate__())
    clone.iterator = None
    return clone


def _fmt(region: Region) -> str:
    return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"


class DaskEngine(Engine):
    """Runs region and unit tasks on the workers of a ``distributed.Client``."""

    name = "dask"

    def __init__(self, client: Any, retries: int = 0) -> None:
        self.client = resolve_client(client)
        super().__init__(max_workers=0)
        self.retries = retries  # for exceptions; lost workers are rescheduled by Dask regardless
        self._threads = 0
        self._writers: dict[int, tuple[str, bytes]] = {}  # id(writer) -> (token, pickled writer)
        self._pending: dict[str, Any] = {}  # key -> distributed.Future of a running task
        self._checked_stores: set[str] = set()  # stores every worker was seen to reach, this write
        self._cancelling = False

    @classmethod
    def create(cls, options: WriteOptions) -> DaskEngine:
        """The engine for ``engine="dask"``; without a client (given or current) it refuses clearly."""
        return cls(options.client)

    # -- set-up ---------------------------------------------------------------------------------
    def _cluster_threads(self) -> dict[str, int]:
        return dict(self.client.nthreads())

    def describe(self) -> str:
        threads = self._cluster_threads() if self.client.status == "running" else {}
        return f"dask ({len(threads)} workers, {sum(threads.values())} threads)"

    def admit(self, writer: DatasetWriter) -> None:
        """One dataset joining a write: checked before any of its data moves."""
        self._prepare([writer])

    def _prepare(self, writers: Sequence[DatasetWriter]) -> None:
        """Refuse, with a clear error naming the dataset, a store workers cannot reach or an iterator
        that cannot travel to them; then keep each dataset's pickled bytes for its tasks."""
        self._connect()
        payloads = [self._payload(writer) for writer in writers]
        unchecked = {}
        for writer in writers:
            unchecked.setdefault(_describe_store(writer.array.store), writer)
        for store_id in self._checked_stores.intersection(unchecked):
            del unchecked[store_id]
        self._check_reachable(list(unchecked.values()))
        self._checked_stores.update(unchecked)
        for writer, payload in zip(writers, payloads, strict=True):
            self._writers[id(writer)] = (uuid.uuid4().hex, payload)
        logger.debug("dask engine: %d dataset(s) admitted on %s", len(writers), self.describe())

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

    def _payload(self, writer: DatasetWriter) -> bytes:
        from distributed.protocol.pickle import dumps

        problem = store_problem(writer.array.store)
        if problem:
            raise ValueError(f"engine='dask' cannot write dataset '{writer.name}': {problem}")
        shipped = writer if writer.random_access else _store_only(writer)
        try:
            payload = dumps(shipped)
        except Exception as exc:
            raise TypeError(
                f"engine='dask' cannot write dataset '{writer.name}': its iterator "
                f"({type(writer.iterator).__name__}) cannot be pickled to reach the workers ({exc!r}); "
                "make it picklable, or use engine='threads'"
            ) from exc
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"engine='dask' cannot write dataset '{writer.name}': it pickles to "
                f"{len(payload) / 2**20:.0f} MiB (its iterator holds its data), which every task would carry "
                "to a worker; give it an iterator that reads from a file every worker can open, "
                "or use engine='threads'"
            )
        if len(payload) > LARGE_PAYLOAD_BYTES:
            warnings.warn(
                f"dataset '{writer.name}' pickles to {len(payload) / 2**20:.1f} MiB (its iterator seems to hold "
                "its data), which every Dask task of it carries to a worker; an iterator that reads from a "
                "file the workers can open keeps tasks small",
                RuntimeWarning,
                stacklevel=3,
            )
        return payload

    def _check_reachable(self, writers: Sequence[DatasetWriter]) -> None:
        """Each worker opens the store of every dataset given and looks for its array's metadata."""
        if not writers:
            return
        checks = [(w.name, w.array.store, _metadata_key(w)) for w in writers]
        missing = self.client.run(_unreachable, checks, on_error="return")
        for worker, names in missing.items():
            if isinstance(names, OSError):  # the worker left meanwhile (comm closed): nothing to check
                continue
            if isinstance(names, BaseException):
                raise ValueError(
                    f"engine='dask': worker {worker} cannot open the store of these datasets: {names!r}"
                ) from names
            if names:
                store = _describe_store(writers[0].array.store)
                raise ValueError(
                    f"engine='dask': worker {worker} cannot see dataset(s) {', '.join(names)} in {store}; "
                    "workers must reach the store: a path on a filesystem every worker mounts, or an fsspec URL"
                )

    def tile_bytes(self, options: WriteOptions) -> int:
        """As for the other engines, with the cluster's threads as the workers."""
        return max(1, min(MAX_TILE_BYTES, options.max_inflight_bytes // (2 * max(1, self._threads))))

    # -- tasks ----------------------------------------------------------------------------------
    def submit_region(self, writer: DatasetWriter, region: Region) -> Future[int]:
        future = self.client.submit(
            _write_region,
            *self._writers[id(writer)],
            region,
            key=f"hzp-region-{uuid.uuid4().hex}",
            pure=False,
            retries=self.retries,
        )
        return self._wrap(future, writer, None, f"writing region {_fmt(region)}", writer.region_nbytes(region))

    def submit_units(self, writer: DatasetWriter, units: Sequence[tuple[Coords, np.ndarray]]) -> Future[int]:
        units = list(units)
        future = self.client.submit(
            _write_units,
            *self._writers[id(writer)],
            units,
            key=f"hzp-units-{uuid.uuid4().hex}",
            pure=False,
            retries=self.retries,
        )
        first = units[0][0] if units else None
        stage = "writing the assembled chunk" if len(units) == 1 else f"writing {len(units)} assembled units"
        return self._wrap(future, writer, first, stage, sum(data.nbytes for _, data in units))

    def _wrap(self, dfuture: Any, writer: DatasetWriter, chunk: Coords | None, stage: str, nbytes: int) -> Future:
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
                error = ChunkWriteError(writer.name, chunk, f"{stage} on a Dask worker", detail)
                error.__cause__ = raised
            result.set_exception(error)

        dfuture.add_done_callback(finished)
        return result

    # -- tear-down ------------------------------------------------------------------------------
    def shutdown(self, cancel: bool = False) -> None:
        """Release every task; with ``cancel`` drop queued ones (a task already running on a worker
        finishes its tile: Dask cannot interrupt it). Workers forget this write's datasets."""
        futures = list(self._pending.values())
        tokens = [token for token, _ in self._writers.values()]
        try:
            if cancel and futures:
                self._cancelling = True
                self.client.cancel(futures)
            if tokens and self.client.status == "running":
                self.client.run(_forget_writers, tokens, on_error="return")
        except Exception:  # a client or cluster that is already gone has nothing left to release
            logger.debug("releasing Dask tasks failed", exc_info=True)
        self._pending.clear()
        self._writers.clear()
        self._checked_stores.clear()
        self._threads = 0
