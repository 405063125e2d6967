"""One rule for whether another process can open a dataset's store.

The ``processes`` engine sends datasets to worker processes on this machine and the
``dask`` engine to workers that may run anywhere; both pickle the zarr array, and its store
must then open to the same bytes in the other process:

- a ``LocalStore`` (a directory path) can be opened by any process that sees the same
  filesystem (for Dask the workers' view is then checked on the workers themselves);
- an ``FsspecStore`` reaches its URL from anywhere, except an fsspec ``memory://``
  filesystem, which lives in this process only;
- every other store (``MemoryStore``, ``ZipStore``, wrappers, ...) holds its state in this
  process, or in a file handle only it may write through.
"""

from __future__ import annotations

from typing import Any


def unreachable_reason(store: Any) -> str | None:
    """Why another process cannot write into ``store``, or ``None`` if it can."""
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(store, LocalStore):
        return None
    if isinstance(store, FsspecStore):
        protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
        if "memory" in protocols:
            return "its store is an fsspec memory:// filesystem, which lives in this process only"
        return None
    return (
        f"its store ({type(store).__name__}) cannot be opened by another process; write to a path on a "
        "filesystem the workers mount, or to an fsspec URL (e.g. 's3://bucket/file.nwb.zarr')"
    )


def describe_store(store: Any) -> str:
    """A store as error messages name it: its type, and its path where it has one."""
    root = getattr(store, "root", None) or getattr(store, "path", None)
    return f"{type(store).__name__}({str(root)!r})" if root is not None else type(store).__name__
