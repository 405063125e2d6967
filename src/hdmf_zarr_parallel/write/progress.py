"""One progress bar per write: bytes written across all datasets, with throughput."""

from __future__ import annotations

import threading
from typing import Any


class Progress:
    """A thread-safe byte counter that drives a tqdm bar when asked to."""

    def __init__(self, enabled: bool | dict[str, Any], total: int | None, desc: str) -> None:
        self.written = 0
        self._lock = threading.Lock()
        self._bar = None
        self._unbounded = False
        if enabled:
            from tqdm.auto import tqdm

            options = dict(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=True)
            if isinstance(enabled, dict):
                options.update(enabled)
            self._bar = tqdm(**options)

    def add_total(self, nbytes: int) -> None:
        """A dataset joined the write: its bytes count towards the total."""
        if self._bar is not None:
            with self._lock:
                if not self._unbounded:
                    self._bar.total = (self._bar.total or 0) + nbytes
                    self._bar.refresh()

    def mark_unbounded(self) -> None:
        """A generator of unknown length joined: no honest total can be shown any more."""
        if self._bar is not None:
            with self._lock:
                self._bar.total = None
                self._unbounded = True
                self._bar.refresh()

    def update(self, nbytes: int) -> None:
        with self._lock:
            self.written += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
