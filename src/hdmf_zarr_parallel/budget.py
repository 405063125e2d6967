"""A byte budget that bounds the data in flight between read and store."""

from __future__ import annotations

import threading


class WriteCancelled(Exception):
    """Raised inside the pipeline when another stage failed and the write is stopping."""


class ByteBudget:
    """Counts bytes read but not yet stored; blocks producers when the limit is reached.

    One item larger than the whole budget is still let through when nothing else is
    in flight, so the pipeline can always make progress.
    """

    def __init__(self, limit: int, stop: threading.Event | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_inflight_bytes must be >= 1, got {limit}")
        self.limit = limit
        self.stop = stop or threading.Event()
        self._used = 0
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes that were ever in flight at once (for tests and reports)."""
        return self._peak

    def acquire(self, nbytes: int) -> None:
        with self._cond:
            while self._used > 0 and self._used + nbytes > self.limit:
                if self.stop.is_set():
                    raise WriteCancelled
                self._cond.wait(timeout=0.1)
            if self.stop.is_set():
                raise WriteCancelled
            self._used += nbytes
            self._peak = max(self._peak, self._used)

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._used -= nbytes
            self._cond.notify_all()

    def cancel(self) -> None:
        """Wake every waiting producer so it can see that the write is stopping."""
        self.stop.set()
        with self._cond:
            self._cond.notify_all()
