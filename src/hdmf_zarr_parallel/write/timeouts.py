"""Calls that the caller stops waiting for after a deadline (the ``read_timeout`` option).

A Python thread cannot be interrupted, so a call with a deadline runs on a helper daemon
thread while the caller waits at most ``timeout`` seconds. When the deadline passes the
caller raises :class:`CallTimedOut` and the helper is abandoned: it ends whenever the call
returns, and its result is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class CallTimedOut(TimeoutError):
    """The call did not return within its deadline (it goes on running, abandoned)."""


class TimedCalls:
    """One helper daemon thread that runs its owner's calls one at a time, each with a deadline.

    After a call timed out the helper is abandoned (it exits once that call returns) and a new
    one is started for the next call. :meth:`close` ends the helper.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._helper: tuple[queue.SimpleQueue, queue.SimpleQueue] | None = None

    def call[T](self, fn: Callable[[], T], timeout: float) -> T:
        if self._helper is None:
            requests: queue.SimpleQueue = queue.SimpleQueue()
            results: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(requests, results), name=self._name, daemon=True).start()
            self._helper = (requests, results)
        requests, results = self._helper
        requests.put(fn)
        try:
            ok, value = results.get(timeout=timeout)
        except queue.Empty:
            self.close()  # the helper exits once the call returns
            raise CallTimedOut(f"no result within {timeout:g} s") from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        if self._helper is not None:
            self._helper[0].put(None)
            self._helper = None


def _serve(requests: queue.SimpleQueue, results: queue.SimpleQueue) -> None:
    while (fn := requests.get()) is not None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:
            outcome = (False, exc)
        results.put(outcome)
        del fn, outcome


def call_with_timeout[T](fn: Callable[[], T], timeout: float, name: str) -> T:
    """``fn()`` on a fresh helper daemon thread, waiting at most ``timeout`` seconds for it."""
    calls = TimedCalls(name)
    try:
        return calls.call(fn, timeout)
    finally:
        calls.close()
