"""The core's timers: a heap of ``(when, kind, id)`` with cancellation.

Pure: the time is whatever the caller says it is. Entries name what they are
about by number (a resource id, a caller id), never by object, so a timer
never keeps a released resource alive; cancelled entries are dropped lazily
and the heap is rebuilt once they outnumber the live ones, so its size stays
proportional to the timers that can still fire. Cancelling a handle that
already fired, was already cancelled or was never given is a no-op.
"""

from __future__ import annotations

import heapq
import math

__all__ = ["Timers"]

_COMPACT_AT = 64


class Timers:
    """Deadlines of the core, fired in time order."""

    __slots__ = ("_cancelled", "_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        # Invariant: _live and _cancelled are disjoint and together are exactly
        # the handles in the heap; only a live handle may be cancelled.
        self._live: set[int] = set()
        self._cancelled: set[int] = set()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def add(self, when: float, kind: str, ident: int) -> int | None:
        """Schedule ``(kind, ident)`` at ``when``; a handle, or ``None`` if never.

        An infinite (or NaN) time is "never": nothing is scheduled, so an
        absurd timeout cannot reach the shell's wait as an overflow.
        """
        if not math.isfinite(when):
            return None
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, ident))
        self._live.add(self._seq)
        return self._seq

    def cancel(self, handle: int | None) -> None:
        """Forget a timer; a `None`, fired or cancelled handle is a no-op."""
        if handle not in self._live:
            return
        self._live.discard(handle)
        self._cancelled.add(handle)
        if len(self._cancelled) > _COMPACT_AT and 2 * len(self._cancelled) > len(
            self._heap
        ):
            self._heap = [e for e in self._heap if e[1] not in self._cancelled]
            heapq.heapify(self._heap)
            self._cancelled.clear()

    def next_deadline(self) -> float | None:
        """When the next live timer is due, or ``None``."""
        heap, cancelled = self._heap, self._cancelled
        while heap and heap[0][1] in cancelled:
            cancelled.discard(heapq.heappop(heap)[1])
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> tuple[int, str, int] | None:
        """The earliest timer due at ``now`` as ``(handle, kind, id)``, removed."""
        if self.next_deadline() is None or self._heap[0][0] > now:
            return None
        _, handle, kind, ident = heapq.heappop(self._heap)
        self._live.discard(handle)
        return handle, kind, ident
