"""A small thread pool whose stuck workers cannot keep the interpreter alive.

``concurrent.futures.ThreadPoolExecutor`` joins every worker thread when the interpreter
exits, and ``shutdown`` waits for running tasks: one iterator read that never returns then
blocks the write's cancellation, and later the process's exit, forever. A thread cannot be
killed, so this pool's workers are daemon threads that :meth:`DaemonThreadPool.shutdown`
may *abandon*: with a ``timeout`` it waits that long for running tasks, then returns and
leaves the threads still running to end whenever their call returns (the pipeline's stop
flag keeps them from storing anything after the write has returned, see ``sink.py``).

Like ``ThreadPoolExecutor``, a thread is started only when a task is submitted and no idle
thread is waiting, never more than ``max_workers``.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = None  # the sentinel that ends one worker thread


class DaemonThreadPool:
    """``submit`` and ``shutdown`` as in ``concurrent.futures``, on daemon threads."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._names = itertools.count()
        self._work: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one release per worker waiting for work
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to a thread pool that was shut down")
            self._work.put((future, fn, args))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._loop, name=f"{self._prefix}_{next(self._names)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, fn, args = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del future, fn, args  # no reference to the task's data while idle
            self._idle.release()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False, timeout: float | None = None) -> list[str]:
        """Stop taking tasks; with ``cancel_futures`` drop those not started. With ``wait``, wait
        for the running ones, at most ``timeout`` seconds (``None``: as long as they take).
        Returns the names of the threads still running, which are left behind."""
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        for _ in threads:
            self._work.put(_STOP)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in threads if thread.is_alive()]
