"""The worker threads a CRM sink sends with: started on first use, so a sink that only
ever sends one thing at a time never starts a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LazyPool:
    """Thread-safe; ``size`` 1 runs everything in the caller's thread."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` of every item, in order; one item or a size of 1 needs no thread."""
        items = list(items)
        if len(items) <= 1 or self.size == 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            pool = self._pool
        return list(pool.map(fn, items))

    def shutdown(self) -> None:
        """Wait for the running work, then stop the threads; a later map() starts new ones."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
