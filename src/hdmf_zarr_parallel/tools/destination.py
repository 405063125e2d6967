"""Where ``convert`` puts its output: one conversion per output at a time, a temporary store of its
own, and a final swap that never deletes anything ``convert`` did not create.

Every name ``convert`` uses next to ``OUT`` is hidden and derived from ``OUT``'s name:

``.OUT.lock``
    held (``flock``, exclusive) for the whole conversion, so a second ``convert`` to the same
    ``OUT`` fails at once instead of racing the first; removed when the conversion ends.
``.OUT.partial-PID``
    the store being written; renamed to ``OUT`` once complete (and verified).
``.OUT.old-PID``
    the previous ``OUT``, set aside during an ``--overwrite`` swap on filesystems that cannot
    exchange two names atomically (``renameat2(RENAME_EXCHANGE)``: Linux ext4, XFS, btrfs, tmpfs).

Whoever holds the lock is the only conversion to ``OUT``, so any ``.OUT.partial-*`` or
``.OUT.old-*`` it finds was left by a conversion that was killed (SIGKILL, a node crash): a
partial store is removed, a set-aside old store is put back if ``OUT`` is missing (the kill came
between the two renames of a swap) and removed otherwise.

What may be replaced with ``--overwrite``: a Zarr store (v3 ``zarr.json`` or v2 ``.zgroup`` /
``.zarray``) or an empty folder. Never a plain file, a symbolic link, or a folder of other files.
The renames that place a store without replacing anything else are in :mod:`.renames`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ConvertError
from .renames import exchange, rename_noreplace

WRITER_THREAD_PREFIX = "hzp-"  # every thread the engines and the pipeline start is named so


# --------------------------------------------------------------------------------------
# What is at OUT
# --------------------------------------------------------------------------------------
def zarr_format(path: Path) -> int | None:
    """2 or 3 if ``path`` is a folder holding a Zarr store's root metadata, else ``None``."""
    if path.is_symlink() or not path.is_dir():
        return None
    for name, version in (("zarr.json", 3), (".zgroup", 2), (".zarray", 2)):
        try:
            meta = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("zarr_format") == version:
            return version
    return None


def describe(path: Path) -> str:
    """What is at ``path``, for messages."""
    if path.is_symlink():
        return "a symbolic link"
    if path.is_dir():
        version = zarr_format(path)
        if version is not None:
            return f"a Zarr v{version} store"
        return "a folder that is not a Zarr store" if _nonempty(path) else "an empty folder"
    return "a file"


def _nonempty(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except OSError:
        return True


def replaceable(path: Path) -> bool:
    """Whether ``--overwrite`` may replace what is at ``path``: a Zarr store or an empty folder."""
    if path.is_symlink() or not path.is_dir():
        return False
    return zarr_format(path) is not None or not _nonempty(path)


def refuse_to_replace(path: Path) -> str | None:
    """Why ``--overwrite`` must not replace what is at ``path`` (``None``: it may)."""
    if not os.path.lexists(path) or replaceable(path):
        return None
    what = describe(path)
    if "Zarr" not in what:
        what += ", not a Zarr store"
    return f"output {path} is {what}; refusing to replace it"


# --------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------
def lock_path(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.lock"


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``.OUT.lock`` for the whole conversion.

    The kernel drops the lock when its holder dies, however it dies, so a killed conversion never
    blocks the next one. The file is removed on release; acquiring checks that the locked file is
    still the one at the path (else another holder removed it meanwhile, and we try again).
    Where there is no lock to take (no ``fcntl`` on Windows; a filesystem without locks),
    :attr:`held` stays False and :func:`clean_leftovers` removes only what dead processes left.
    """

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.path = lock_path(dst)
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError:  # left by another user's convert that was killed: flock needs no write
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except OSError as exc:
                    raise ConvertError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
            except OSError as exc:
                raise ConvertError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                    return  # this filesystem has no locks
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise ConvertError(f"cannot lock {self.path}: {exc.strerror}") from None
                raise ConvertError(
                    f"another convert{holder} is writing {self.dst} (it holds {self.path.name}); "
                    "wait for it to finish, or choose another output"
                ) from None
            try:
                same = _same_file(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it after we opened it: lock the new one
        with contextlib.suppress(OSError):  # who holds it, for the message of the next one
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        self.held = True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        self.held = False
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)  # still holding the lock, so nobody else has it
        os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid, _, host = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
    except OSError:
        return ""
    if not pid.isdigit():
        return ""
    return f" (process {pid}{f' on {host}' if host and host != socket.gethostname() else ''})"


# --------------------------------------------------------------------------------------
# Our temporary names, and what a killed conversion left
# --------------------------------------------------------------------------------------
def partial_path(dst: Path, pid: int | None = None) -> Path:
    return dst.parent / f".{dst.name}.partial-{os.getpid() if pid is None else pid}"


def aside_path(dst: Path, pid: int | None = None) -> Path:
    return dst.parent / f".{dst.name}.old-{os.getpid() if pid is None else pid}"


def leftovers(dst: Path) -> list[tuple[str, int, Path]]:
    """``(kind, pid, path)`` of every ``.OUT.partial-PID`` and ``.OUT.old-PID`` next to ``dst``."""
    pattern = re.compile(rf"\.{re.escape(dst.name)}\.(partial|old)-(\d+)")
    found = []
    for entry in dst.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            found.append((match[1], int(match[2]), entry))
    return sorted(found, key=lambda item: (item[0] != "old", item[2].name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but someone else's
        return True
    return True


def clean_leftovers(dst: Path, say: Callable[[str], None], locked: bool = True) -> None:
    """Remove (or put back) what killed conversions to ``dst`` left. With the lock held
    (``locked``) every leftover is stale; without one, only those of processes no longer alive."""
    for kind, pid, path in leftovers(dst):
        if not locked and pid != os.getpid() and _pid_alive(pid):
            say(f"left {path.name} alone: process {pid} may still be converting to {dst}")
            continue
        if kind == "old" and not os.path.lexists(dst):
            try:
                rename_noreplace(path, dst)
            except OSError as exc:
                raise ConvertError(f"cannot put back {path} (the previous {dst}): {exc.strerror}") from None
            say(f"restored {dst} from {path.name}: a convert (process {pid}) was killed while replacing it")
            continue
        what = "partial output" if kind == "partial" else "previous output, already replaced,"
        if remove_tree(path):
            say(f"removed {path.name}, the {what} of a convert (process {pid}) that was killed")
        else:
            say(f"could not remove {path}, the {what} of a killed convert; remove it yourself")


# --------------------------------------------------------------------------------------
# Removal, once every writer has stopped
# --------------------------------------------------------------------------------------
def writer_threads() -> set[threading.Thread]:
    """The threads of the engines and the pipeline. ``threading.enumerate()`` lists a thread
    until it has really ended, even when an interrupted ``join()`` made ``is_alive()`` say False."""
    return {t for t in threading.enumerate() if t.name.startswith(WRITER_THREAD_PREFIX)}


def wait_for_writers(before: set[threading.Thread], timeout: float, say: Callable[[str], None]) -> list[str]:
    """Wait until every writer thread started since ``before`` has ended; the names still running
    after ``timeout`` seconds."""
    start = time.monotonic()
    told = False
    while True:
        running = writer_threads() - before
        waited = time.monotonic() - start
        if not running or waited >= timeout:
            return sorted(t.name for t in running)
        if not told and waited > 1.0:
            say(f"waiting for {len(running)} writer thread(s) to stop before removing the partial output ...")
            told = True
        time.sleep(0.02)


def remove_tree(path: Path, quiet: float = 0.0, timeout: float = 30.0) -> bool:
    """Remove ``path`` and make sure it stays removed for ``quiet`` seconds (a store write that was
    already under way when the writers were stopped recreates its folders); gives up after
    ``timeout`` seconds. True when ``path`` is gone."""
    deadline = time.monotonic() + timeout
    while True:
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            if quiet <= 0:
                return True
            time.sleep(quiet)
            if not os.path.lexists(path):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# The final placement
# --------------------------------------------------------------------------------------
def kept_path(dst: Path) -> Path:
    """A visible, free name next to ``dst`` for a finished output that cannot go to ``dst``."""
    base = f"{dst.name}.converted-{os.getpid()}"
    candidate = dst.parent / base
    n = 1
    while os.path.lexists(candidate):
        n += 1
        candidate = dst.parent / f"{base}-{n}"
    return candidate


def place(temporary: Path, dst: Path, overwrite: bool, existed: bool) -> None:
    """Move the finished store ``temporary`` to ``dst``. Call with the lock held.

    ``existed``: whether ``dst`` existed when the conversion started (what ``--overwrite`` was
    given for). Anything else found at ``dst`` now appeared meanwhile; it is left as it is, the
    finished store is kept under a visible name, and :class:`ConvertError` says where.
    """
    if not os.path.lexists(dst):
        try:
            rename_noreplace(temporary, dst)
            return
        except FileExistsError:
            pass  # it appeared just now
    reason = None
    if not overwrite or not existed:
        reason = f"{describe(dst)} appeared at {dst} while converting; left it as it is"
    elif not replaceable(dst):
        reason = f"{dst} became {describe(dst)} while converting; refusing to replace it"
    if reason is not None:
        kept = kept_path(dst)
        rename_noreplace(temporary, kept)
        raise ConvertError(f"{reason}; the finished output is at {kept}")
    if exchange(temporary, dst):
        remove_tree(temporary)  # now the previous store
        return
    aside = aside_path(dst)
    try:
        os.rename(dst, aside)
        rename_noreplace(temporary, dst)
    except BaseException:
        if os.path.lexists(aside) and not os.path.lexists(dst):
            with contextlib.suppress(OSError):
                rename_noreplace(aside, dst)
        raise
    remove_tree(aside)


@contextlib.contextmanager
def cleanup_on_failure(temporary: Path, say: Callable[[str], None], writer_timeout: float = 30.0) -> Iterator[None]:
    """On any failure (Ctrl-C and SIGTERM included), wait until every writer this block started has
    stopped, then remove ``temporary``, and make sure no late store write brings it back."""
    before = writer_threads()
    try:
        yield
    except BaseException:
        still = wait_for_writers(before, writer_timeout, say)
        if still:
            say(
                f"{len(still)} writer thread(s) still running ({', '.join(still)}); "
                f"left {temporary.name} for the next convert to remove"
            )
        elif not remove_tree(temporary, quiet=0.5):
            say(f"could not remove {temporary}; the next convert to this output removes it")
        raise
