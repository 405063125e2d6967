"""A byte budget that bounds the data in flight between read and store.

Bytes in flight are of two kinds, and the difference is what keeps a write from hanging:

- *task bytes* belong to a submitted task (a region, or assembled units, being encoded and
  stored); they come back on their own when the task ends;
- *staged bytes* are held by a :class:`Stager`, the feeder of one sequential dataset, in
  units still waiting for more of its input; only that feeder's own progress frees them.

A request never takes the total above the limit. It waits while task bytes are out, since
they will come back; when nothing can come back (no task bytes, and every stager holding
bytes is itself waiting), it raises :class:`InflightLimitError` instead of waiting forever.
Stagers whose peak need is known up front reserve it when they :meth:`ByteBudget.join`, so
that sequential datasets never block one another: one waits to start until its peak fits.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


class WriteCancelled(Exception):
    """Raised inside the pipeline when another stage failed and the write is stopping."""


class InflightLimitError(ValueError):
    """The write cannot go on within ``max_inflight_bytes``; the message says what bound would."""


@dataclass(eq=False)
class Stager:
    """The budget's view of one sequential dataset's feeder."""

    name: str
    claim: int = 0  # the most bytes it will ever hold staged, reserved at join; 0 when not known
    staged: int = 0
    waiting: bool = False


class ByteBudget:
    """Counts bytes read but not yet stored; blocks producers when the limit is reached."""

    def __init__(self, limit: int, stop: threading.Event | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_inflight_bytes must be >= 1, got {limit}")
        self.limit = limit
        self.stop = stop or threading.Event()
        self._tasks = 0  # task bytes
        self._staged = 0  # staged bytes, all stagers together
        self._claimed = 0
        self._stagers: list[Stager] = []
        self._requests: Counter[int] = Counter()  # the sizes that waiting acquires ask for
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._tasks + self._staged

    @property
    def peak(self) -> int:
        """The most bytes that were ever in flight at once (for tests and reports)."""
        return self._peak

    # -- stagers ----------------------------------------------------------------------
    def join(self, name: str, claim: int = 0) -> Stager:
        """Register a feeder; waits until its ``claim`` fits beside the claims of those staging now."""
        if claim > self.limit:
            raise InflightLimitError(
                f"dataset '{name}' stages up to {claim} bytes, more than max_inflight_bytes={self.limit}"
            )
        with self._cond:
            while self._claimed + claim > self.limit:
                self._wait()
            stager = Stager(name, claim)
            self._claimed += claim
            self._stagers.append(stager)
            return stager

    def leave(self, stager: Stager) -> None:
        """The feeder is done: its claim frees up (its bytes were handed over or the write stopped)."""
        with self._cond:
            if stager in self._stagers:
                self._stagers.remove(stager)
                self._claimed -= stager.claim
                self._staged -= stager.staged
                stager.staged = 0
            self._cond.notify_all()

    def hand_over(self, nbytes: int, stager: Stager) -> None:
        """Staged bytes now belong to a task: they come back with :meth:`release` when it ends."""
        with self._cond:
            stager.staged -= nbytes
            self._staged -= nbytes
            self._tasks += nbytes
            self._cond.notify_all()

    # -- bytes ------------------------------------------------------------------------
    def try_acquire(self, nbytes: int, stager: Stager | None = None) -> bool:
        """Take ``nbytes`` if they fit now (staged by ``stager``, else task bytes); never waits."""
        self._check_size(nbytes, stager)
        with self._cond:
            if self.stop.is_set():
                raise WriteCancelled
            if self.used + nbytes > self.limit:
                return False
            self._take(nbytes, stager)
            return True

    def acquire(self, nbytes: int, stager: Stager | None = None) -> None:
        """Take ``nbytes``, waiting for tasks to give bytes back; raises :class:`InflightLimitError`
        when no byte can ever come back."""
        self._check_size(nbytes, stager)
        with self._cond:
            if stager is not None:
                stager.waiting = True
            self._requests[nbytes] += 1
            try:
                while self.used + nbytes > self.limit:
                    if self._stuck():
                        raise InflightLimitError(self._stuck_message(nbytes, stager))
                    self._wait()
                if self.stop.is_set():
                    raise WriteCancelled
                self._take(nbytes, stager)
            finally:
                self._requests[nbytes] -= 1
                if stager is not None:
                    stager.waiting = False

    def release(self, nbytes: int) -> None:
        """A task ended: its bytes come back."""
        with self._cond:
            self._tasks -= nbytes
            self._cond.notify_all()

    def cancel(self) -> None:
        """Wake every waiting producer so it can see that the write is stopping."""
        self.stop.set()
        with self._cond:
            self._cond.notify_all()

    # -- inside the lock ------------------------------------------------------------------
    def _check_size(self, nbytes: int, stager: Stager | None) -> None:
        if nbytes > self.limit:  # validate() refuses what would ask this; never let it through
            who = f"dataset '{stager.name}'" if stager is not None else "a task"
            raise InflightLimitError(f"{who} needs {nbytes} bytes at once, more than max_inflight_bytes={self.limit}")

    def _take(self, nbytes: int, stager: Stager | None) -> None:
        if stager is None:
            self._tasks += nbytes
        else:
            stager.staged += nbytes
            self._staged += nbytes
        self._peak = max(self._peak, self.used)

    def _wait(self) -> None:
        if self.stop.is_set():
            raise WriteCancelled
        self._cond.wait(timeout=0.1)
        if self.stop.is_set():
            raise WriteCancelled

    def _stuck(self) -> bool:
        """Nothing can ever free a byte: no task bytes are out, every stager holding bytes waits for
        more, and no waiting request fits (one that does is about to go on, not yet woken)."""
        return (
            self._tasks == 0
            and all(s.waiting for s in self._stagers if s.staged > 0)
            and all(self.used + r > self.limit for r, n in self._requests.items() if n > 0)
        )

    def _stuck_message(self, nbytes: int, stager: Stager | None) -> str:
        holders = ", ".join(f"'{s.name}' ({s.staged} bytes)" for s in self._stagers if s.staged > 0)
        who = f"dataset '{stager.name}'" if stager is not None else "the next region task"
        return (
            f"{who} needs {nbytes} more bytes, but max_inflight_bytes={self.limit} is all held by chunks "
            f"that only more of their iterator's buffers can complete: {holders}. max_inflight_bytes of at "
            f"least {self._staged + nbytes} would let this write go on (it may need more later), as would "
            "iterator buffers that cover whole chunks"
        )
