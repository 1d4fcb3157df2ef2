"""The ``Worker`` resource shared by the examples: the Go seed's ``Worker``.

Its ``repr`` stands in for Go's ``%+v``: ``Worker(closed=False)``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import structlog

from pooler_actors import Pool

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


class Worker:
    """A resource that can be pooled: it closes, and its ping fails once closed."""

    def __init__(self) -> None:
        self.closed = False
        # Like the Go Worker's mutex: close() and ping() may run in different
        # threads (the caller's and the resource actor's).
        self._mu = threading.Lock()

    def __repr__(self) -> str:
        return f"Worker(closed={self.closed})"

    def close(self) -> None:
        """Mark the worker closed."""
        with self._mu:
            self.closed = True

    def ping(self) -> None:
        """Raise once the worker is closed, as the Go ``PingContext`` does."""
        with self._mu:
            if self.closed:
                raise RuntimeError("worker is closed")


def worker_factory() -> Worker:
    """Create a new Worker (the Go ``WorkerFactory``)."""
    return Worker()


def new_worker_pool(**options: Any) -> Pool[str, Worker]:
    """A pool of Workers (the Go ``NewWorkerPool``); options as ``PoolOptions``."""
    return Pool[str, Worker](worker_factory, **options)
